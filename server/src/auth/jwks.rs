//! [`Jwks`]: an identity provider's signing keys, fetched from its JWK Set
//! URL (`auth.jwks_url`), cached, refreshed, and picked by a token's `kid`.
//!
//! Keys are fetched when first needed and again once `auth.jwks_refresh_ms`
//! has passed (on the next token), or when a token names a `kid` the set
//! does not hold (a key rotated in), at most once per [`MIN_REFETCH`] (or
//! the refresh interval, if shorter), so that tokens with made-up key ids
//! cannot make Holdfast hammer the provider. One fetch runs at a time;
//! tokens that arrive meanwhile wait for it, and a burst of tokens that
//! all find a fetch due still makes one. A failed fetch keeps the keys
//! already held, for at most `auth.jwks_max_age_ms` after the last fetch
//! that worked: past it they are no longer trusted (a key the provider
//! revoked while it was unreachable stops verifying) and tokens get
//! [`AuthError::KeysUnavailable`] until a fetch works again. Only signing keys of asymmetric algorithms are taken
//! (RSA: RS256/384/512, PS256/384/512; EC P-256/P-384: ES256/ES384; Ed25519:
//! EdDSA); a symmetric (`oct`) key never comes from a URL, and a key used
//! for encryption (`use: enc`) is not a signing key. A key's algorithm is
//! its `alg`, or what its type and curve call for; a token is verified with
//! that algorithm only, whatever its header says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use serde_json::Value;
use tracing::{info, warn};

use super::AuthError;

/// The shortest wait between two fetches asked for by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Bound on one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWK Set larger than this is refused.
const MAX_BODY: usize = 1024 * 1024;

/// One signing key and the algorithm tokens must use with it.
#[derive(Clone)]
pub(super) struct SigningKey {
    pub(super) key: DecodingKey,
    pub(super) algorithm: Algorithm,
}

/// The provider's keys, as last fetched.
#[derive(Default)]
struct Held {
    /// By `kid`; a key without one under "".
    keys: HashMap<String, SigningKey>,
    /// When the last fetch succeeded.
    fetched: Option<Instant>,
    /// When the last fetch began.
    attempted: Option<Instant>,
}

/// See the module docs.
pub struct Jwks {
    url: String,
    refresh: Duration,
    max_age: Duration,
    client: reqwest::Client,
    held: Mutex<Held>,
    /// Held while a fetch runs: one at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// Keys from `url`, refreshed every `refresh`, trusted for `max_age`
    /// after the last fetch that worked, fetched with `client`.
    pub fn new(url: &str, refresh: Duration, max_age: Duration, client: reqwest::Client) -> Self {
        Self {
            url: url.to_owned(),
            refresh,
            max_age,
            client,
            held: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key a token with `kid` (its header's) is checked with. A held
    /// key is used at once (a refresh due runs beside); a missing one waits
    /// for a fetch, the one in flight or a new one if one may start.
    ///
    /// # Errors
    /// No key of that id, even after a fetch ([`AuthError::Invalid`]); no
    /// key at all because the set could never be fetched
    /// ([`AuthError::KeysUnavailable`]).
    pub(super) async fn key(self: &Arc<Self>, kid: Option<&str>) -> Result<SigningKey, AuthError> {
        let (found, stale, seen) = {
            let held = self.held.lock();
            (
                self.trusted_key(&held, kid),
                held.fetched.is_none_or(|t| t.elapsed() >= self.refresh),
                held.attempted,
            )
        };
        let may_fetch = seen.is_none_or(|t| t.elapsed() >= MIN_REFETCH.min(self.refresh));
        if let Some(key) = found {
            if stale && may_fetch {
                let jwks = self.clone();
                tokio::spawn(async move { jwks.fetch_once(seen).await });
            }
            return Ok(key);
        }
        if may_fetch {
            // On a task of its own: a request dropped meanwhile (its client
            // gone) never cancels a fetch half done.
            let jwks = self.clone();
            let _ = tokio::spawn(async move { jwks.fetch_once(seen).await }).await;
        } else {
            drop(self.fetching.lock().await); // the fetch in flight, if any
        }
        let held = self.held.lock();
        let trusted = self.trusted(&held);
        self.trusted_key(&held, kid)
            .ok_or_else(|| match (trusted, kid) {
                (false, _) => AuthError::KeysUnavailable,
                (true, Some(_)) => AuthError::Invalid(
                    "signed with a key the issuer's key set does not hold (kid)".into(),
                ),
                (true, None) => AuthError::Invalid(
                    "no kid, and the issuer's key set holds more than one key".into(),
                ),
            })
    }

    /// Whether the held keys may be used: fetched, within `max_age`.
    fn trusted(&self, held: &Held) -> bool {
        held.fetched.is_some_and(|t| t.elapsed() < self.max_age)
    }

    /// The held key for `kid`, if the held keys are trusted.
    fn trusted_key(&self, held: &Held, kid: Option<&str>) -> Option<SigningKey> {
        self.trusted(held)
            .then(|| lookup(&held.keys, kid))
            .flatten()
    }

    /// Fetches, unless a fetch began since the caller saw `seen` (the last
    /// attempt's start when it decided to fetch): a burst makes one.
    async fn fetch_once(&self, seen: Option<Instant>) {
        let _one = self.fetching.lock().await;
        if self.held.lock().attempted != seen {
            return; // another caller fetched meanwhile
        }
        self.held.lock().attempted = Some(Instant::now());
        let url = holdfast_actors::db::redact_url(&self.url);
        match self.fetch().await {
            Ok(keys) => {
                info!(url = %url, keys = keys.len(), "signing keys fetched");
                let mut held = self.held.lock();
                held.keys = keys;
                held.fetched = Some(Instant::now());
            }
            Err(e) => {
                warn!(url = %url, error = %e, "signing keys could not be fetched; the keys held are kept")
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, SigningKey>, String> {
        let res = self
            .client
            .get(&self.url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status().as_u16()));
        }
        if res.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err("a key set over 1 MiB".into());
        }
        let mut body = Vec::new();
        let mut res = res;
        while let Some(chunk) = res.chunk().await.map_err(|e| e.without_url().to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err("a key set over 1 MiB".into());
            }
        }
        parse(&body)
    }
}

/// The key for `kid`; without one, the set's only key.
fn lookup(keys: &HashMap<String, SigningKey>, kid: Option<&str>) -> Option<SigningKey> {
    match kid {
        Some(kid) => keys.get(kid).cloned(),
        None if keys.len() == 1 => keys.values().next().cloned(),
        None => None,
    }
}

/// The signing keys of a JWK Set (RFC 7517): keys of other uses, symmetric
/// keys and keys that do not parse are skipped.
fn parse(body: &[u8]) -> Result<HashMap<String, SigningKey>, String> {
    let set: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let entries = set["keys"].as_array().ok_or("no `keys` array")?;
    let mut keys = HashMap::new();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let (Some(algorithm), Ok(key)) = (algorithm(&jwk), DecodingKey::from_jwk(&jwk)) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid, SigningKey { key, algorithm });
    }
    if keys.is_empty() {
        return Err("no signing key of a supported type".into());
    }
    Ok(keys)
}

/// What algorithm tokens signed with `jwk` must use: its `alg` when that
/// fits its type, else the one its type and curve call for; `None` for a
/// symmetric key or a mismatch.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None, // oct (symmetric) and the rest
    };
    let Some(alg) = &jwk.common.key_algorithm else {
        return Some(by_type);
    };
    let named = match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    let rsa = |a: Algorithm| {
        matches!(
            a,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    };
    (named == by_type || (rsa(named) && rsa(by_type))).then_some(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/jwt/jwks.json");

    #[test]
    fn a_set_gives_its_signing_keys_with_their_algorithms_and_never_a_symmetric_one() {
        let keys = parse(FIXTURE.as_bytes()).unwrap();
        let mut algs: Vec<(String, Algorithm)> =
            keys.iter().map(|(k, v)| (k.clone(), v.algorithm)).collect();
        algs.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            algs,
            [
                ("ec-1".to_owned(), Algorithm::ES256),
                ("rsa-1".to_owned(), Algorithm::RS256)
            ]
        );
        assert!(parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse(b"[]").is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn an_alg_that_does_not_fit_the_key_type_drops_the_key() {
        let mut set: Value = serde_json::from_str(FIXTURE).unwrap();
        set["keys"][0]["alg"] = "ES256".into(); // on the RSA key
        set["keys"][1]["use"] = "enc".into(); // the EC key
        assert!(parse(set.to_string().as_bytes()).is_err());
    }

    #[test]
    fn without_a_kid_only_a_single_key_is_used() {
        let keys = parse(FIXTURE.as_bytes()).unwrap();
        assert!(lookup(&keys, None).is_none());
        assert!(lookup(&keys, Some("rsa-1")).is_some());
        let one: HashMap<_, _> = keys.into_iter().filter(|(k, _)| k == "ec-1").collect();
        assert_eq!(lookup(&one, None).unwrap().algorithm, Algorithm::ES256);
    }
}
