//! `auth.jwks_url`: tokens verified with the signing keys an identity
//! provider publishes (a fake provider here, serving
//! `tests/fixtures/jwt/jwks.json`), through real WebSocket upgrades: the key
//! picked by `kid`, a key rotated in found by a fetch, fetches bounded
//! whatever `kid`s clients make up, the provider down at first (503, then
//! served once it answers), and neither an `oct` key nor another algorithm
//! accepted.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast::server::{Builder, Server};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::fake_http::{Fake, Reply};
use common::settings;
use common::ws::try_connect;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn key_set() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{KEYS}/jwks.json")).unwrap()).unwrap()
}

/// The key set with only the keys whose `kid` is in `kids`.
fn only(kids: &[&str]) -> Value {
    let mut set = key_set();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| kids.contains(&k["kid"].as_str().unwrap()));
    set
}

fn claims(sub: &str) -> Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    json!({"sub": sub, "exp": exp})
}

/// A token signed with the fixture key `which` (`rsa` or `ec`), `kid` in its header.
fn signed(which: &str, kid: Option<&str>, sub: &str) -> String {
    let pem = std::fs::read(format!("{KEYS}/{which}_private.pem")).unwrap();
    let (key, alg) = match which {
        "rsa" => (EncodingKey::from_rsa_pem(&pem).unwrap(), Algorithm::RS256),
        _ => (EncodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims(sub), &key).unwrap()
}

async fn start(provider: &Fake, refresh_ms: u64) -> Server {
    start_aged(provider, refresh_ms, 86_400_000).await
}

/// [`start`], with keys trusted for `max_age_ms` past their last fetch.
async fn start_aged(provider: &Fake, refresh_ms: u64, max_age_ms: u64) -> Server {
    let mut s = settings();
    s.auth.jwks_url = provider.url("/jwks.json");
    s.auth.jwks_refresh_ms = refresh_ms;
    s.auth.jwks_max_age_ms = max_age_ms;
    Builder::new(s).start().await.expect("server starts")
}

/// The status of an upgrade with `token` (101 when it connected).
async fn upgrade(server: &Server, token: &str) -> u16 {
    match try_connect(server.addr(), &format!("?token={token}"), &[]).await {
        Ok(_) => 101,
        Err(status) => status,
    }
}

/// Waits (15 s at most) until an upgrade with `token` answers `status`.
async fn until_upgrade(server: &Server, token: &str, status: u16, what: &str) {
    common::wait_until(what, Duration::from_secs(15), || async {
        upgrade(server, token).await == status
    })
    .await;
}

/// Each key of the set verifies the tokens that name it; a token naming
/// one key but signed by the other, an HS256 token for the set's `oct`
/// key, and a token without `kid` (two keys: which?) get 401.
#[actix_rt::test]
async fn tokens_are_verified_with_the_key_their_kid_names() {
    let provider = Fake::start(false);
    provider.set("/jwks.json", Reply::json(key_set()));
    let server = start(&provider, 300_000).await;

    let c = try_connect(
        server.addr(),
        &format!("?token={}", signed("rsa", Some("rsa-1"), "ann")),
        &[],
    )
    .await
    .expect("the RSA key's token connects");
    assert_eq!(c.user(), "ann");
    assert_eq!(
        upgrade(&server, &signed("ec", Some("ec-1"), "bob")).await,
        101
    );

    assert_eq!(
        upgrade(&server, &signed("ec", Some("rsa-1"), "eve")).await,
        401,
        "wrong key for the kid"
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("hs-1".into());
    let forged = encode(
        &hs,
        &claims("eve"),
        &EncodingKey::from_secret(b"auth-test-secret-0123456789"),
    )
    .unwrap();
    assert_eq!(
        upgrade(&server, &forged).await,
        401,
        "a symmetric key from a URL"
    );
    assert_eq!(
        upgrade(&server, &signed("rsa", None, "eve")).await,
        401,
        "no kid among two keys"
    );
    assert_eq!(
        provider.count("/jwks.json"),
        1,
        "the set was fetched once and cached"
    );
}

/// A key rotated in (a `kid` the held set lacks) is fetched, at most once
/// per interval however many made-up `kid`s arrive; a key rotated out
/// stops verifying once the set is fetched again.
#[actix_rt::test]
async fn a_rotated_key_is_fetched_and_unknown_kids_do_not_hammer_the_provider() {
    let provider = Fake::start(false);
    provider.set("/jwks.json", Reply::json(only(&["ec-1"])));
    let server = start(&provider, 1000).await;
    assert_eq!(
        upgrade(&server, &signed("ec", Some("ec-1"), "ann")).await,
        101
    );

    provider.set("/jwks.json", Reply::json(only(&["rsa-1"])));
    for i in 0..20 {
        let made_up = signed("rsa", Some(&format!("nobody-{i}")), "eve");
        assert_eq!(upgrade(&server, &made_up).await, 401);
    }
    assert!(
        provider.count("/jwks.json") <= 3,
        "fetches: {}",
        provider.count("/jwks.json")
    );
    common::wait_until(
        "the rotated-in key verifies",
        Duration::from_secs(10),
        || async { upgrade(&server, &signed("rsa", Some("rsa-1"), "ann")).await == 101 },
    )
    .await;
    common::wait_until(
        "the rotated-out key stops verifying",
        Duration::from_secs(10),
        || async { upgrade(&server, &signed("ec", Some("ec-1"), "ann")).await == 401 },
    )
    .await;
}

/// The provider down when the first clients come: 503 (retry), never a
/// 401 for a valid token; once it answers, they connect.
#[actix_rt::test]
async fn a_provider_that_is_down_at_first_is_a_503_until_it_answers() {
    let provider = Fake::start(false);
    provider.set("/jwks.json", Reply::status(500));
    let server = start(&provider, 1000).await;
    let token = signed("rsa", Some("rsa-1"), "ann");
    assert_eq!(upgrade(&server, &token).await, 503);
    provider.set("/jwks.json", Reply::json(key_set()));
    until_upgrade(&server, &token, 101, "the provider's keys fetched").await;
}

/// A burst of clients arriving before any key is held (a fresh server, a
/// reconnect storm) costs the provider one fetch: they all wait for it.
#[actix_rt::test]
async fn a_burst_of_first_tokens_fetches_the_set_once() {
    let provider = Fake::start(false);
    provider.set("/jwks.json", Reply::json(key_set()));
    let server = start(&provider, 300_000).await;
    let token = signed("rsa", Some("rsa-1"), "ann");
    let upgrades = (0..20).map(|_| upgrade(&server, &token));
    let statuses = futures::future::join_all(upgrades).await;
    assert!(statuses.iter().all(|s| *s == 101), "{statuses:?}");
    assert_eq!(provider.count("/jwks.json"), 1, "fetches for one burst");
}

/// Keys the provider could not confirm for `auth.jwks_max_age_ms` are no
/// longer trusted (a key revoked while the provider was unreachable stops
/// verifying): 503, as when no key was ever fetched, until a fetch works.
#[actix_rt::test]
async fn keys_past_their_max_age_are_not_trusted_until_fetched_again() {
    let provider = Fake::start(false);
    provider.set("/jwks.json", Reply::json(key_set()));
    let server = start_aged(&provider, 1000, 3000).await;
    let token = signed("rsa", Some("rsa-1"), "ann");
    assert_eq!(upgrade(&server, &token).await, 101);

    provider.set("/jwks.json", Reply::status(500));
    until_upgrade(&server, &token, 503, "the held keys aged out").await;
    assert!(provider.count("/jwks.json") >= 2, "refreshes were tried");

    provider.set("/jwks.json", Reply::json(key_set()));
    until_upgrade(&server, &token, 101, "the keys fetched again").await;
}
