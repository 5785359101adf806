//! Client authentication: JWTs verified with an HS256 secret, an issuer's
//! RS256 or ES256 public key (PEM), or the signing keys an identity
//! provider publishes at a JWK Set URL (`jwks`: cached, refreshed, picked by
//! `kid`), from `Authorization: Bearer <token>` or the `token` query
//! parameter (browsers cannot set headers on a WebSocket). A token needs `sub` and `exp`; `nbf` and `iat` are checked
//! when present (not before, not issued in the future), `aud` and `iss` when
//! configured, all within `auth.leeway_ms`; `rooms`, `rpc` and the
//! application's own claims are read. Only the key's algorithm is accepted,
//! so a token can never pick how it is checked. Without a key every client
//! is anonymous and gets a generated user id.

mod jwks;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::RequestHead;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{AuthSettings, ConfigError, TlsSettings};
use jwks::{Jwks, SigningKey};
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
    /// The issuer's key set could not be fetched yet (HTTP 503: retry).
    #[error("the issuer's signing keys could not be fetched; retry shortly")]
    KeysUnavailable,
}

/// Where a verifier's keys come from.
enum Keys {
    /// `auth.jwt_secret` or `auth.public_key_file`.
    One(SigningKey),
    /// `auth.jwks_url`.
    Set(Arc<Jwks>),
}

/// Verifies tokens with a key or a provider's key set.
pub struct Verifier {
    keys: Keys,
    /// The checks of every token (with a key set, all but the algorithm,
    /// which is the key's).
    validation: Validation,
    /// Clock skew allowed, seconds.
    leeway: u64,
}

impl Verifier {
    /// The verifier `[auth]` configures; `None` when it sets no key
    /// (anonymous clients).
    ///
    /// # Errors
    /// A config error naming the key: both a secret and a key file, a key
    /// file that cannot be read or is not an RSA or EC P-256 public key, a
    /// leeway that is not whole seconds.
    pub fn from_settings(
        auth: &AuthSettings,
        tls: &TlsSettings,
    ) -> Result<Option<Self>, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Key {
            key: key.into(),
            message,
        };
        if !auth.leeway_ms.is_multiple_of(1000) {
            return Err(bad(
                "auth.leeway_ms",
                "must be whole seconds (a multiple of 1000): JWT times are seconds".into(),
            ));
        }
        let set: Vec<&str> = [
            ("auth.jwt_secret", auth.jwt_secret.is_empty()),
            ("auth.public_key_file", auth.public_key_file.is_empty()),
            ("auth.jwks_url", auth.jwks_url.is_empty()),
        ]
        .into_iter()
        .filter(|(_, empty)| !empty)
        .map(|(key, _)| key)
        .collect();
        if let [first, .., last] = set.as_slice() {
            return Err(bad(
                last,
                format!("set one of auth.jwt_secret, auth.public_key_file and auth.jwks_url; {first} is set too"),
            ));
        }
        let keys = match set.first().copied() {
            None => return Ok(None),
            Some("auth.jwt_secret") => Keys::One(SigningKey {
                key: DecodingKey::from_secret(auth.jwt_secret.expose().as_bytes()),
                algorithm: Algorithm::HS256,
            }),
            Some("auth.public_key_file") => Keys::One(Self::key_file(&auth.public_key_file)?),
            Some(_) => {
                if !jwks_url_allowed(&auth.jwks_url) {
                    return Err(bad(
                        "auth.jwks_url",
                        "must be an https:// URL (http:// only on loopback): keys fetched in clear could be anyone's".into(),
                    ));
                }
                if auth.jwks_refresh_ms < 1000 {
                    return Err(bad("auth.jwks_refresh_ms", "must be at least 1000".into()));
                }
                if auth.jwks_max_age_ms < auth.jwks_refresh_ms {
                    return Err(bad(
                        "auth.jwks_max_age_ms",
                        "must be at least auth.jwks_refresh_ms".into(),
                    ));
                }
                let client = tls
                    .client()?
                    .http_client()
                    // A redirect could lead to keys in clear, or elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| bad("auth.jwks_url", e.without_url().to_string()))?;
                Keys::Set(Arc::new(Jwks::new(
                    &auth.jwks_url,
                    Duration::from_millis(auth.jwks_refresh_ms),
                    Duration::from_millis(auth.jwks_max_age_ms),
                    client,
                )))
            }
        };
        Ok(Some(Self::with(keys, auth)))
    }

    /// The RSA or EC P-256 public key of a PEM file.
    fn key_file(path: &str) -> Result<SigningKey, ConfigError> {
        let bad = |message: String| ConfigError::Key {
            key: "auth.public_key_file".into(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("{path}: {e}")))?;
        if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            return Ok(SigningKey {
                key,
                algorithm: Algorithm::RS256,
            });
        }
        match DecodingKey::from_ec_pem(&pem) {
            Ok(key) => Ok(SigningKey {
                key,
                algorithm: Algorithm::ES256,
            }),
            Err(_) => Err(bad(format!("{path}: not a PEM RSA or EC P-256 public key"))),
        }
    }

    fn with(keys: Keys, auth: &AuthSettings) -> Self {
        let leeway = auth.leeway_ms / 1000;
        // The algorithm is the one key's; a key set's is set at each check.
        let algorithm = match &keys {
            Keys::One(key) => key.algorithm,
            Keys::Set(_) => Algorithm::RS256,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if auth.audience.is_empty() {
            // A token may carry an audience Holdfast was not told to check.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&auth.audience]);
            required.push("aud");
        }
        if !auth.issuer.is_empty() {
            validation.set_issuer(&[&auth.issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Self {
            keys,
            validation,
            leeway,
        }
    }

    /// The identity a token proves.
    ///
    /// # Errors
    /// See [`AuthError`]; the message never contains the token.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let fetched;
        let (signing, validation) = match &self.keys {
            // One key: its checks built once, nothing copied per token.
            Keys::One(key) => (key, std::borrow::Cow::Borrowed(&self.validation)),
            Keys::Set(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| AuthError::Invalid("not a JWT".into()))?;
                fetched = jwks.key(header.kid.as_deref()).await?;
                let mut validation = self.validation.clone();
                validation.algorithms = vec![fetched.algorithm];
                (&fetched, std::borrow::Cow::Owned(validation))
            }
        };
        let all = jsonwebtoken::decode::<Map<String, Value>>(token, &signing.key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                // In Holdfast's words: the library's would tell an attacker
                // what it parsed.
                let alg = signing.algorithm;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => return AuthError::Expired,
                    ErrorKind::ImmatureSignature => return AuthError::NotYetValid,
                    ErrorKind::InvalidSignature => "bad signature".into(),
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        format!("the algorithm must be {alg:?}")
                    }
                    ErrorKind::InvalidAudience => "not for this audience (aud)".into(),
                    ErrorKind::InvalidIssuer => "not from this issuer (iss)".into(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("no {claim} claim"),
                    _ => format!("not a JWT signed with {alg:?}"),
                };
                AuthError::Invalid(why)
            })?
            .claims;
        match all.get("iat") {
            None => {}
            Some(Value::Number(n)) => {
                let now = jsonwebtoken::get_current_timestamp();
                if n.as_f64()
                    .is_some_and(|iat| iat > (now + self.leeway) as f64)
                {
                    return Err(AuthError::Invalid("issued in the future (iat)".into()));
                }
            }
            Some(_) => return Err(AuthError::Invalid("iat is not a number".into())),
        }
        let claims = Claims::deserialize(&Value::Object(all.clone())).map_err(|_| {
            AuthError::Invalid("a claim has the wrong type (sub a string, exp a number, rooms and rpc arrays of strings)".into())
        })?;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        Ok(Identity {
            user: claims.sub,
            // The session ends when the token would stop being accepted.
            expires_at: Some(claims.exp.saturating_add(self.leeway)),
            rooms: claims.rooms,
            rpc: claims.rpc,
            claims: Arc::new(all),
            authenticated: true,
        })
    }
}

/// Whether keys may be fetched from `url`: over TLS, or in clear only from
/// this machine (a provider on loopback, a test's).
fn jwks_url_allowed(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("https://") {
        return !rest.is_empty();
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token a request carries, if any: its bearer token, else its
/// `token` query parameter.
pub fn token_of(req: &RequestHead) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Some(t) = h.to_str().ok().and_then(crate::http::bearer::token) {
            return Some(t.to_owned());
        }
    }
    web_query_token(req.uri.query().unwrap_or_default())
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
pub async fn authenticate(
    req: &RequestHead,
    verifier: Option<&Verifier>,
) -> Result<Identity, AuthError> {
    match verifier {
        Some(v) => v.verify(&token_of(req).ok_or(AuthError::Missing)?).await,
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

    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

    fn settings(f: impl FnOnce(&mut AuthSettings)) -> AuthSettings {
        let mut auth = AuthSettings {
            jwt_secret: crate::config::Secret::new("auth-test-secret-0123456789"),
            public_key_file: String::new(),
            audience: String::new(),
            issuer: String::new(),
            leeway_ms: 0,
            jwks_url: String::new(),
            jwks_refresh_ms: 300_000,
            jwks_max_age_ms: 86_400_000,
        };
        f(&mut auth);
        auth
    }

    fn tls() -> TlsSettings {
        crate::config::Settings::defaults().tls
    }

    /// A verifier with one key needs no runtime.
    fn check(v: &Verifier, token: &str) -> Result<Identity, AuthError> {
        futures::executor::block_on(v.verify(token))
    }

    fn verifier(auth: &AuthSettings) -> Verifier {
        Verifier::from_settings(auth, &tls()).unwrap().unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn hs256(claims: Value) -> String {
        let key = EncodingKey::from_secret(b"auth-test-secret-0123456789");
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn a_token_with_an_audience_is_accepted_when_none_is_configured() {
        let v = verifier(&settings(|_| {}));
        let t = hs256(json!({"sub": "ann", "exp": now() + 60, "aud": "some-api", "iss": "idp"}));
        assert_eq!(check(&v, &t).unwrap().user, "ann");
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let v = verifier(&settings(|a| {
            a.audience = "holdfast".into();
            a.issuer = "https://idp.example".into();
        }));
        let exp = now() + 60;
        let ok = hs256(
            json!({"sub": "ann", "exp": exp, "aud": ["other", "holdfast"], "iss": "https://idp.example"}),
        );
        assert_eq!(check(&v, &ok).unwrap().user, "ann");
        for (claims, why) in [
            (
                json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://idp.example"}),
                "not for this audience (aud)",
            ),
            (
                json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}),
                "no aud claim",
            ),
            (
                json!({"sub": "a", "exp": exp, "aud": "holdfast", "iss": "https://evil.example"}),
                "not from this issuer (iss)",
            ),
            (
                json!({"sub": "a", "exp": exp, "aud": "holdfast"}),
                "no iss claim",
            ),
        ] {
            match check(&v, &hs256(claims.clone())) {
                Err(AuthError::Invalid(m)) => assert_eq!(m, why, "{claims}"),
                other => panic!("{claims}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_leeway_covers_exp_nbf_and_iat_and_the_session_ends_with_it() {
        let strict = verifier(&settings(|_| {}));
        let lenient = verifier(&settings(|a| a.leeway_ms = 5000));
        let expired = hs256(json!({"sub": "ann", "exp": now() - 2}));
        assert!(matches!(check(&strict, &expired), Err(AuthError::Expired)));
        let id = check(&lenient, &expired).unwrap();
        assert_eq!(id.expires_at, Some((now() - 2 + 5) as u64));
        let early = hs256(json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 2}));
        assert!(matches!(
            check(&strict, &early),
            Err(AuthError::NotYetValid)
        ));
        assert!(check(&lenient, &early).is_ok());
        let future = hs256(json!({"sub": "ann", "exp": now() + 60, "iat": now() + 30}));
        match check(&strict, &future) {
            Err(AuthError::Invalid(m)) => assert_eq!(m, "issued in the future (iat)"),
            other => panic!("{other:?}"),
        }
        let fine = hs256(json!({"sub": "ann", "exp": now() + 60, "iat": now() + 2}));
        assert!(check(&lenient, &fine).is_ok());
        assert!(check(
            &strict,
            &hs256(json!({"sub": "ann", "exp": now() + 60, "iat": "soon"}))
        )
        .is_err());
    }

    #[test]
    fn rs256_and_es256_public_keys_verify_their_own_algorithm_only() {
        let rsa = verifier(&settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.public_key_file = format!("{FIXTURES}/rsa_public.pem");
        }));
        let claims = json!({"sub": "ann", "exp": now() + 60});
        let key = EncodingKey::from_rsa_pem(&pem("rsa_private.pem")).unwrap();
        let t = encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        assert_eq!(check(&rsa, &t).unwrap().user, "ann");
        // Algorithm confusion: HS256 keyed with the public key's bytes.
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&pem("rsa_public.pem")),
        )
        .unwrap();
        match check(&rsa, &forged) {
            Err(AuthError::Invalid(m)) => assert_eq!(m, "the algorithm must be RS256"),
            other => panic!("{other:?}"),
        }

        let ec = verifier(&settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.public_key_file = format!("{FIXTURES}/ec_public.pem");
        }));
        let key = EncodingKey::from_ec_pem(&pem("ec_private.pem")).unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        assert_eq!(check(&ec, &t).unwrap().user, "ann");
        assert!(check(&ec, &hs256(claims)).is_err());
    }

    #[test]
    fn auth_settings_errors_name_their_key() {
        let key_of = |auth: AuthSettings| match Verifier::from_settings(&auth, &tls()) {
            Err(ConfigError::Key { key, message }) => (key, message),
            other => panic!("{:?}", other.map(|v| v.is_some())),
        };
        let (key, _) = key_of(settings(|a| {
            a.public_key_file = format!("{FIXTURES}/rsa_public.pem")
        }));
        assert_eq!(key, "auth.public_key_file", "both a secret and a key file");
        let (key, _) = key_of(settings(|a| a.leeway_ms = 1500));
        assert_eq!(key, "auth.leeway_ms");
        let (key, message) = key_of(settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.public_key_file = format!("{FIXTURES}/README.md");
        }));
        assert_eq!(key, "auth.public_key_file");
        assert!(
            message.contains("not a PEM RSA or EC P-256 public key"),
            "{message}"
        );
        let (key, _) = key_of(settings(|a| a.jwks_url = "https://idp.example/jwks".into()));
        assert_eq!(key, "auth.jwks_url", "both a secret and a key set");
        let (key, _) = key_of(settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.jwks_url = "ftp://idp.example/jwks".into();
        }));
        assert_eq!(key, "auth.jwks_url");
        let (key, _) = key_of(settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.jwks_url = "https://idp.example/jwks".into();
            a.jwks_refresh_ms = 10;
        }));
        assert_eq!(key, "auth.jwks_refresh_ms");
        let (key, _) = key_of(settings(|a| {
            a.jwt_secret = crate::config::Secret::new("");
            a.jwks_url = "https://idp.example/jwks".into();
            a.jwks_max_age_ms = 60_000; // below the refresh interval
        }));
        assert_eq!(key, "auth.jwks_max_age_ms");
        assert!(Verifier::from_settings(
            &settings(|a| a.jwt_secret = crate::config::Secret::new("")),
            &tls()
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn key_sets_come_over_tls_or_from_loopback_only() {
        for ok in [
            "https://idp.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(jwks_url_allowed(ok), "{ok}");
        }
        for refused in [
            "http://idp.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost.evil.example/jwks",
            "http://localhost@evil.example/jwks",
            "ftp://idp.example/jwks",
            "https://",
        ] {
            assert!(!jwks_url_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn token_is_read_from_the_query() {
        assert_eq!(web_query_token("a=1&token=abc.def"), Some("abc.def".into()));
        assert_eq!(web_query_token("a=1"), None);
    }
}
