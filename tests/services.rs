//! The domain services against things the tests control: `trending` against
//! a local HTTP server (and an HTTPS one whose certificate a CA made for the
//! test signed), `printers` against fake OctoPrint servers, `files`
//! against a temporary directory and the server's own SQLite file. What they
//! broadcast is read by a real WebSocket client in the system rooms.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use holdfast::actors::shutdown::ShutdownReason;
use holdfast::server::config::{FeedSettings, PrinterSettings, Secret};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::fake_http::{job, paused, printer, Fake, Reply};
use common::tls::TestPki;
use common::ws::{connect, Client};
use common::{get, settings, wait_until};

const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

async fn stop(server: Server) {
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    assert_eq!(server.run_until_stopped().await.exit_code, 0);
}

/// The next `message` of `room`; answers its `data` (checks `from`).
async fn next_in(c: &mut Client, room: &str) -> Value {
    loop {
        let v = c.recv().await;
        if v["type"] == "message" && v["room"] == room {
            assert_eq!(v["from"], "system", "{v}");
            return v["data"].clone();
        }
    }
}

/// `rpc` to a service, as a browser would send it: the reply (or error).
async fn rpc(c: &mut Client, method: &str, data: Value) -> Value {
    let reply = c
        .request(json!({"type": "rpc", "method": method, "data": data, "id": method}))
        .await;
    assert_eq!(reply["id"], method, "{reply}");
    reply
}

/// A client in `room`.
async fn member_of(server: &Server, room: &str) -> Client {
    let mut c = connect(server.addr()).await;
    c.join(room).await;
    c
}

async fn stats(server: &Server) -> Value {
    let (status, _, body) = get(server, "/api/v1/trending/statistics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the statistics satisfy `cond`; answers them.
async fn stats_when(server: &Server, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let last = Arc::new(Mutex::new(Value::Null));
    let seen = last.clone();
    let cond = &cond;
    wait_until(what, DEADLINE, || {
        let seen = seen.clone();
        async move {
            let s = stats(server).await;
            let ok = cond(&s);
            *seen.lock().unwrap() = s;
            ok
        }
    })
    .await;
    let s = last.lock().unwrap().clone();
    s
}

/// The value of one series in `/metrics` (`name{labels}` as written there).
async fn metric(server: &Server, series: &str) -> Option<f64> {
    let text = common::metrics_text(server).await;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn url(s: &str) -> holdfast::server::config::DbUrl {
    serde_json::from_value(json!(s)).unwrap()
}

/// Settings with trending feeds, fast back-off, and one refresh a minute.
fn trending(feeds: &[(&str, String)]) -> Settings {
    let mut s = settings();
    let t = &mut s.trending;
    t.feeds = feeds
        .iter()
        .map(|(name, u)| FeedSettings {
            name: (*name).into(),
            url: url(u),
        })
        .collect();
    t.interval_ms = 60_000;
    t.cache_ttl_ms = 0;
    t.retry_base_ms = 20;
    t.retry_max_ms = 200;
    t.connect_timeout_ms = 1000;
    // Long enough that a request held by a gated fake (`Fake::start(true)`)
    // waits for `open` however long the test takes to join `$trending` on a
    // loaded machine, instead of timing out and being retried, which would
    // change the request counts the tests check.
    t.read_timeout_ms = 20_000;
    t.timeout_ms = 30_000;
    s
}

// ---------------------------------------------------------------------------
// trending
// ---------------------------------------------------------------------------

/// With nothing configured every service is in the tree, idle and healthy,
/// and the statistics are all zero.
#[actix_rt::test]
async fn unconfigured_services_are_present_idle_and_healthy() {
    let server = start(settings()).await;
    for (name, key) in [("trending", "feeds"), ("printers", "printers")] {
        let (status, _, check) = get(&server, &format!("/health/{name}")).await;
        assert_eq!(status, 200, "{check}");
        assert_eq!(check["status"], "healthy", "{check}");
        assert_eq!(check["supervisor"], "services", "{check}");
        assert_eq!(check["details"][key], 0, "{check}");
    }
    let (_, _, printers) = get(&server, "/health/printers").await;
    assert_eq!(printers["details"]["monitoring"], false);
    let (_, _, files) = get(&server, "/health/files").await;
    assert_eq!(files["status"], "healthy", "{files}");
    assert_eq!(files["details"]["active"], false, "{files}");
    let s = stats(&server).await;
    assert_eq!(s["total_requests"], 0, "{s}");
    assert_eq!(s["success_rate"], Value::Null, "{s}");
    assert_eq!(s["breakers"], json!({}), "{s}");
    stop(server).await;
}

/// A 503 is retried with back-off until a document comes, over one pooled
/// keep-alive connection; a feed that keeps failing is given up after the
/// configured tries. The document reaches `$trending`, and the statistics
/// and metrics count exactly what the feeds saw.
#[actix_rt::test]
async fn a_503_is_retried_and_the_document_is_broadcast() {
    let fake = Fake::start(true);
    let doc = json!({"top": ["benchy", "calibration cube"]});
    fake.script(
        "/news",
        vec![
            Reply::status(503),
            Reply::status(503),
            Reply::json(doc.clone()),
        ],
    );
    fake.set("/dead", Reply::status(503));
    let server = start(trending(&[
        ("news", fake.url("/news")),
        ("dead", fake.url("/dead")),
    ]))
    .await;
    let mut c = member_of(&server, "$trending").await;
    fake.open();

    let update = next_in(&mut c, "$trending").await;
    assert_eq!(update["feed"], "news", "{update}");
    assert_eq!(update["data"], doc);
    assert!(update["fetched_at"].is_string(), "{update}");

    let s = stats_when(&server, "both fetches over", |s| {
        s["feeds"]["news"]["successful_fetches"] == 1 && s["feeds"]["dead"]["failed_fetches"] == 1
    })
    .await;
    assert_eq!(fake.count("/news"), 3, "two 503s and a success");
    assert_eq!(fake.count("/dead"), 3, "retry_tries = 3, then it gives up");
    assert_eq!(s["total_requests"], 6, "{s}");
    assert_eq!(s["successful_fetches"], 1, "{s}");
    assert_eq!(s["failed_requests"], 5, "{s}");
    assert_eq!(s["retries"], 4, "{s}");
    assert!(
        (s["success_rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9,
        "{s}"
    );
    assert!(s["last_fetch_time"].is_string(), "{s}");
    assert!(s["last_error"].as_str().unwrap().contains("503"), "{s}");
    assert_eq!(
        (s["cache_hits"].clone(), s["cache_misses"].clone()),
        (json!(0), json!(2))
    );
    assert_eq!(
        s["breakers"],
        json!({"news": "closed", "dead": "closed"}),
        "{s}"
    );
    assert_eq!(s["feeds"]["news"]["total_requests"], 3, "{s}");
    // Each feed's three requests went over one kept-alive connection.
    assert_eq!(fake.connections(), 2, "one pooled connection per feed");

    let m = |series: &'static str| metric(&server, series);
    assert_eq!(
        m("holdfast_trending_requests_total{feed=\"news\"}").await,
        Some(3.0)
    );
    assert_eq!(
        m("holdfast_trending_retries_total{feed=\"dead\"}").await,
        Some(2.0)
    );
    assert_eq!(
        m("holdfast_trending_successful_fetches_total{feed=\"news\"}").await,
        Some(1.0)
    );
    assert_eq!(
        m("holdfast_trending_failed_fetches_total{feed=\"dead\"}").await,
        Some(1.0)
    );
    assert_eq!(
        m("holdfast_trending_request_failures_total{feed=\"dead\",reason=\"status\"}").await,
        Some(3.0)
    );
    assert_eq!(
        m("holdfast_trending_breaker_state{feed=\"news\",state=\"closed\"}").await,
        Some(1.0)
    );
    assert_eq!(
        m("holdfast_trending_cache_misses_total{feed=\"news\"}").await,
        Some(1.0)
    );
    let ratio = m("holdfast_trending_success_ratio").await.unwrap();
    assert!((ratio - 1.0 / 6.0).abs() < 1e-9, "{ratio}");
    stop(server).await;
}

/// A request that times out is retried, and the retry's document is used.
#[actix_rt::test]
async fn a_timeout_is_retried() {
    let fake = Fake::start(false);
    fake.set("/slow", Reply::json(json!({"on_time": true})));
    fake.script(
        "/slow",
        vec![Reply::json(json!({"late": true})).delay(Duration::from_secs(5))],
    );
    let mut s = trending(&[("slow", fake.url("/slow"))]);
    s.trending.timeout_ms = 300;
    s.trending.read_timeout_ms = 300;
    let server = start(s).await;
    let s = stats_when(&server, "the fetch succeeded", |s| {
        s["successful_fetches"] == 1
    })
    .await;
    assert_eq!(fake.count("/slow"), 2);
    assert_eq!(s["total_requests"], 2, "{s}");
    assert_eq!(s["failed_requests"], 1, "{s}");
    assert_eq!(s["retries"], 1, "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("timed out"),
        "{s}"
    );
    let (_, _, cached) = get(&server, "/api/v1/trending").await;
    assert_eq!(
        cached["feeds"]["slow"]["data"],
        json!({"on_time": true}),
        "{cached}"
    );
    stop(server).await;
}

/// A body that is not JSON fails the fetch at once: no retry.
#[actix_rt::test]
async fn invalid_json_is_not_retried() {
    let fake = Fake::start(false);
    fake.set("/broken", Reply::raw(200, "<html>not json</html>"));
    let server = start(trending(&[("broken", fake.url("/broken"))])).await;
    let s = stats_when(&server, "the fetch gave up", |s| {
        s["feeds"]["broken"]["failed_fetches"] == 1
    })
    .await;
    assert_eq!(fake.count("/broken"), 1, "never retried");
    assert_eq!(s["total_requests"], 1, "{s}");
    assert_eq!(s["failed_requests"], 1, "{s}");
    assert_eq!(s["retries"], 0, "{s}");
    assert_eq!(s["success_rate"], 0.0, "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("invalid JSON"),
        "{s}"
    );
    assert_eq!(
        metric(
            &server,
            "holdfast_trending_request_failures_total{feed=\"broken\",reason=\"parse\"}"
        )
        .await,
        Some(1.0)
    );
    stop(server).await;
}

/// A 429 with `Retry-After: 1` is retried after one second, not after the
/// (20 ms) back-off.
#[actix_rt::test]
async fn retry_after_is_honoured() {
    let fake = Fake::start(false);
    fake.set("/busy", Reply::json(json!({"ok": true})));
    fake.script("/busy", vec![Reply::status(429).header("Retry-After", "1")]);
    let mut s = trending(&[("busy", fake.url("/busy"))]);
    s.trending.retry_max_ms = 5000;
    let server = start(s).await;
    let s = stats_when(&server, "the retry succeeded", |s| {
        s["successful_fetches"] == 1
    })
    .await;
    let seen = fake.seen("/busy");
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
    assert_eq!(s["retries"], 1, "{s}");
    stop(server).await;
}

/// Consecutive failures open the feed's breaker: no request while it is
/// open; then one trial (half-open) that fails opens it again; a trial that
/// succeeds closes it. `/health/trending` is degraded while it is open.
#[actix_rt::test]
async fn the_breaker_opens_half_opens_and_closes() {
    let fake = Fake::start(false);
    fake.set("/flaky", Reply::status(500));
    let mut s = trending(&[("flaky", fake.url("/flaky"))]);
    s.trending.interval_ms = 50;
    s.trending.retry_tries = 1;
    s.trending.breaker_failure_threshold = 2;
    s.trending.breaker_open_ms = 600;
    let server = start(s).await;
    let breaker = |s: &Value| s["breakers"]["flaky"].clone();

    stats_when(&server, "the breaker opens", |s| breaker(s) == "open").await;
    assert_eq!(fake.count("/flaky"), 2, "opened at the threshold");
    let (_, _, check) = get(&server, "/health/trending").await;
    assert_eq!(check["status"], "degraded", "{check}");
    let s = stats_when(&server, "refreshes rejected", |s| {
        s["rejected_by_breaker"].as_u64().unwrap() >= 3
    })
    .await;
    assert_eq!(breaker(&s), "open");
    assert_eq!(fake.count("/flaky"), 2, "no request while open");

    // A failing trial opens it again, after exactly one request.
    let s = stats_when(&server, "a failed trial re-opens it", |s| {
        s["feeds"]["flaky"]["breaker"]["opened"] == 2
    })
    .await;
    assert_eq!(breaker(&s), "open");
    assert_eq!(fake.count("/flaky"), 3, "one trial request");

    // A slow, successful trial: half-open while it runs, then closed.
    fake.set(
        "/flaky",
        Reply::json(json!({"back": true})).delay(Duration::from_millis(400)),
    );
    stats_when(&server, "half-open during the trial", |s| {
        breaker(s) == "half_open"
    })
    .await;
    assert_eq!(fake.count("/flaky"), 4);
    let s = stats_when(&server, "the trial closes it", |s| breaker(s) == "closed").await;
    assert_eq!(s["successful_fetches"], 1, "{s}");
    assert_eq!(
        s["feeds"]["flaky"]["breaker"]["consecutive_failures"], 0,
        "{s}"
    );
    assert_eq!(s["failed_requests"], 3, "{s}");
    let (_, _, check) = get(&server, "/health/trending").await;
    assert_eq!(check["status"], "healthy", "{check}");
    assert_eq!(
        metric(
            &server,
            "holdfast_trending_breaker_state{feed=\"flaky\",state=\"open\"}"
        )
        .await,
        Some(0.0)
    );
    stop(server).await;
}

/// A document younger than the cache TTL is served from the cache: every
/// refresh after the first is a hit and sends no request; an unchanged
/// document is broadcast once.
#[actix_rt::test]
async fn documents_are_cached_for_their_ttl() {
    let fake = Fake::start(true);
    fake.set("/cached", Reply::json(json!({"n": 1})));
    let mut s = trending(&[("cached", fake.url("/cached"))]);
    s.trending.interval_ms = 30;
    s.trending.cache_ttl_ms = 60_000;
    let server = start(s).await;
    let mut c = member_of(&server, "$trending").await;
    fake.open();
    assert_eq!(next_in(&mut c, "$trending").await["data"], json!({"n": 1}));
    let s = stats_when(&server, "cache hits", |s| {
        s["cache_hits"].as_u64().unwrap() >= 5
    })
    .await;
    assert_eq!(fake.count("/cached"), 1, "served from the cache");
    assert_eq!(s["cache_misses"], 1, "{s}");
    assert_eq!(s["total_requests"], 1, "{s}");
    let (_, _, snapshot) = get(&server, "/api/v1/trending").await;
    let feed = &snapshot["feeds"]["cached"];
    assert_eq!(feed["data"], json!({"n": 1}), "{snapshot}");
    assert_eq!(feed["stale"], false, "{snapshot}");
    let hits = metric(
        &server,
        "holdfast_trending_cache_hits_total{feed=\"cached\"}",
    )
    .await
    .unwrap();
    assert!(hits >= 6.0, "{hits}");
    // Nothing new was broadcast meanwhile: the next frame is our ping's pong.
    let pong = c.request(json!({"type": "ping", "id": "p"})).await;
    assert_eq!(pong["type"], "pong");
    stop(server).await;
}

/// An `https://` feed whose certificate a private CA signed is fetched once
/// `tls.ca_file` names that CA: the document reaches `$trending` and the
/// statistics count one successful request.
#[actix_rt::test]
async fn an_https_feed_is_fetched_when_tls_ca_file_trusts_its_ca() {
    let pki = TestPki::new();
    let fake = Fake::start_tls(true, pki.acceptor());
    let doc = json!({"top": ["benchy over TLS"]});
    fake.set("/feed", Reply::json(doc.clone()));
    let dir = tempfile::tempdir().unwrap();
    let mut s = trending(&[("secure", fake.url("/feed"))]);
    assert!(fake.url("/feed").starts_with("https://127.0.0.1:"));
    s.tls.ca_file = pki.write_ca(dir.path()).display().to_string();
    let server = start(s).await;
    let mut c = member_of(&server, "$trending").await;
    fake.open();

    let update = next_in(&mut c, "$trending").await;
    assert_eq!(update["feed"], "secure", "{update}");
    assert_eq!(update["data"], doc);
    let s = stats_when(&server, "the fetch succeeded", |s| {
        s["successful_fetches"] == 1
    })
    .await;
    assert_eq!(s["total_requests"], 1, "{s}");
    assert_eq!(s["failed_requests"], 0, "{s}");
    assert_eq!(fake.count("/feed"), 1, "the request came through TLS");
    stop(server).await;
}

/// The same `https://` feed without its CA in `tls.ca_file`: the handshake
/// fails on the unknown issuer, so no request reaches the feed; each try
/// counts as a failed request (a connect error, retried like one), the
/// error says what is wrong with the certificate, and the breaker opens at
/// its threshold exactly as for any other failure.
#[actix_rt::test]
async fn an_https_feed_with_an_untrusted_certificate_fails_and_opens_the_breaker() {
    let pki = TestPki::new();
    let fake = Fake::start_tls(false, pki.acceptor());
    fake.set("/feed", Reply::json(json!({"never": "served"})));
    // A credential in the URL stays out of every error.
    let feed = fake
        .url("/feed")
        .replace("https://", "https://reader:fe3d-pw@");
    let mut s = trending(&[("untrusted", feed)]);
    s.trending.retry_tries = 3;
    s.trending.breaker_failure_threshold = 3;
    s.trending.breaker_open_ms = 60_000;
    let server = start(s).await;
    let s = stats_when(&server, "the fetch gave up", |s| {
        s["feeds"]["untrusted"]["failed_fetches"] == 1
    })
    .await;
    assert_eq!(s["total_requests"], 3, "{s}");
    assert_eq!(s["failed_requests"], 3, "{s}");
    assert_eq!(s["successful_fetches"], 0, "{s}");
    assert_eq!(s["retries"], 2, "retried as a connect error: {s}");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains("untrusted: connect error") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(!s.to_string().contains("fe3d-pw"), "{s}");
    assert_eq!(s["breakers"]["untrusted"], "open", "{s}");
    assert_eq!(fake.count("/feed"), 0, "no request got past the handshake");
    assert_eq!(fake.connections(), 3, "one handshake per try");
    assert_eq!(
        metric(
            &server,
            "holdfast_trending_request_failures_total{feed=\"untrusted\",reason=\"connect\"}"
        )
        .await,
        Some(3.0)
    );
    let (_, _, check) = get(&server, "/health/trending").await;
    assert_eq!(check["status"], "degraded", "{check}");
    stop(server).await;
}

/// `trending.list` answers the cached documents, all or one feed's, as
/// `GET /api/v1/trending` does; an unknown feed is `unknown_feed`.
#[actix_rt::test]
async fn a_client_reads_the_trending_cache_over_rpc() {
    let fake = Fake::start(false);
    let doc = json!({"top": ["benchy"]});
    fake.set("/news", Reply::json(doc.clone()));
    fake.set("/deals", Reply::json(json!({"off": 10})));
    let server = start(trending(&[
        ("news", fake.url("/news")),
        ("deals", fake.url("/deals")),
    ]))
    .await;
    stats_when(&server, "both feeds fetched", |s| {
        s["feeds"]["news"]["successful_fetches"] == 1
            && s["feeds"]["deals"]["successful_fetches"] == 1
    })
    .await;
    let mut c = connect(server.addr()).await;

    let all = rpc(&mut c, "trending.list", Value::Null).await;
    assert_eq!(all["type"], "reply", "{all}");
    assert_eq!(all["data"]["feeds"]["news"]["data"], doc, "{all}");
    assert_eq!(all["data"]["feeds"]["deals"]["data"]["off"], 10, "{all}");
    assert!(
        all["data"]["feeds"]["news"]["fetched_at"].is_string(),
        "{all}"
    );

    let one = rpc(&mut c, "trending.list", json!({"feed": "news"})).await;
    let feeds = one["data"]["feeds"].as_object().unwrap();
    assert_eq!(feeds.keys().collect::<Vec<_>>(), ["news"], "{one}");

    let unknown = rpc(&mut c, "trending.list", json!({"feed": "sports"})).await;
    assert_eq!(unknown["code"], "unknown_feed", "{unknown}");
    let bad = rpc(&mut c, "trending.list", json!({"feeds": "news"})).await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    let no_method = rpc(&mut c, "trending.top", Value::Null).await;
    assert_eq!(no_method["code"], "unknown_method", "{no_method}");
    stop(server).await;
}

// ---------------------------------------------------------------------------
// printers
// ---------------------------------------------------------------------------

const KEY: &str = "octo-KEY-5ecr3t";

fn printers(fakes: &[(&str, &Fake)]) -> Settings {
    let mut s = settings();
    s.printers.timeout_ms = 300;
    s.printers.max_backoff_ms = 2000;
    s.printers.devices = fakes
        .iter()
        .map(|(name, fake)| PrinterSettings {
            name: (*name).into(),
            url: url(&fake.url("")),
            api_key: Secret::new(KEY),
            interval_ms: 50,
        })
        .collect();
    s
}

/// An OctoPrint behind `https://`, its certificate signed by the CA that
/// `tls.ca_file` names, is polled like any other: its state reaches
/// `$printers` and the request carried the API key through TLS.
#[actix_rt::test]
async fn an_https_printer_is_polled_when_tls_ca_file_trusts_its_ca() {
    let pki = TestPki::new();
    let fake = Fake::start_tls(true, pki.acceptor());
    fake.set("/api/printer", printer("Operational", false, false));
    let dir = tempfile::tempdir().unwrap();
    let mut s = printers(&[("secure-mk4", &fake)]);
    s.tls.ca_file = pki.write_ca(dir.path()).display().to_string();
    let server = start(s).await;
    let mut c = member_of(&server, "$printers").await;
    fake.open();
    let idle = next_in(&mut c, "$printers").await;
    assert_eq!(
        (idle["printer"].as_str(), idle["state"].as_str()),
        (Some("secure-mk4"), Some("idle")),
        "{idle}"
    );
    let seen = fake.seen("/api/printer");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    stop(server).await;
}

/// Idle, printing (with progress and file), progress moving, error: each
/// change reaches a client in `$printers`; every request carries the API
/// key, which never shows in `/health`.
#[actix_rt::test]
async fn printer_state_changes_reach_the_printers_room() {
    let fake = Fake::start(true);
    fake.set("/api/printer", printer("Operational", false, false));
    fake.set("/api/job", job("benchy.gcode", 42.5));
    let server = start(printers(&[("mk4", &fake)])).await;
    let mut c = member_of(&server, "$printers").await;
    fake.open();

    let idle = next_in(&mut c, "$printers").await;
    assert_eq!(
        (idle["printer"].as_str(), idle["state"].as_str()),
        (Some("mk4"), Some("idle")),
        "{idle}"
    );
    assert_eq!(idle["previous"], Value::Null);

    fake.set("/api/printer", printer("Printing", true, false));
    let printing = next_in(&mut c, "$printers").await;
    assert_eq!(printing["state"], "printing", "{printing}");
    assert_eq!(printing["previous"], "idle");
    assert_eq!(printing["progress"], 42.5);
    assert_eq!(printing["file"], "benchy.gcode");
    assert_eq!(printing["print_time_left_s"], 3000);

    fake.set("/api/job", job("benchy.gcode", 57.0));
    let moved = next_in(&mut c, "$printers").await;
    assert_eq!(
        (moved["state"].as_str(), moved["progress"].as_f64()),
        (Some("printing"), Some(57.0)),
        "{moved}"
    );

    fake.set(
        "/api/printer",
        printer("Error: Thermal Runaway", false, true),
    );
    let error = next_in(&mut c, "$printers").await;
    assert_eq!(error["state"], "error", "{error}");
    assert_eq!(error["previous"], "printing");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Thermal Runaway"),
        "{error}"
    );

    let seen = fake.seen("/api/printer");
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.api_key.as_deref() == Some(KEY)),
        "X-Api-Key on every request"
    );
    assert!(fake
        .seen("/api/job")
        .iter()
        .all(|r| r.api_key.as_deref() == Some(KEY)));

    let (_, _, check) = get(&server, "/health/printers").await;
    let d = &check["details"];
    assert_eq!(d["printers"], 1, "{check}");
    assert_eq!(d["monitoring"], true, "{check}");
    assert_eq!(d["states"]["mk4"]["state"], "error", "{check}");
    assert!(d["states"]["mk4"]["last_seen"].is_string(), "{check}");
    for path in ["/health", "/health/printers", "/metrics"] {
        let body = reqwest::get(format!("http://{}{path}", server.addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(KEY), "the API key leaked into {path}");
    }
    stop(server).await;
}

/// A printer that stops answering goes offline after its request timeout
/// and is then polled with back-off, while the other printer keeps its
/// pace and its changes arrive at once; when it answers again it is back.
#[actix_rt::test]
async fn a_silent_printer_goes_offline_without_stalling_the_other() {
    let (a, b) = (Fake::start(true), Fake::start(true));
    for fake in [&a, &b] {
        fake.set("/api/printer", printer("Operational", false, false));
        fake.set("/api/job", job("part.gcode", 10.0));
    }
    let server = start(printers(&[("a", &a), ("b", &b)])).await;
    let mut c = member_of(&server, "$printers").await;
    a.open();
    b.open();
    let mut log: Vec<Value> = Vec::new();
    /// Reads `$printers` until `printer` is in `state`, keeping every message in `log`.
    async fn expect(c: &mut Client, log: &mut Vec<Value>, printer: &str, state: &str) -> Value {
        loop {
            let m = next_in(c, "$printers").await;
            log.push(m.clone());
            if m["printer"] == printer && m["state"] == state {
                return m;
            }
        }
    }
    expect(&mut c, &mut log, "a", "idle").await;
    if !log
        .iter()
        .any(|m| m["printer"] == "b" && m["state"] == "idle")
    {
        expect(&mut c, &mut log, "b", "idle").await;
    }

    // b hangs: every request is held far past the 300 ms timeout.
    b.set(
        "/api/printer",
        printer("Operational", false, false).delay(Duration::from_secs(30)),
    );
    let hung_at = Instant::now();
    let a_before = a.count("/api/printer");
    let offline = expect(&mut c, &mut log, "b", "offline").await;
    assert!(
        offline["message"].as_str().unwrap().contains("no answer"),
        "{offline}"
    );
    assert!(
        a.count("/api/printer") >= a_before + 3,
        "a kept being polled while b hung"
    );

    // a's change arrives promptly while b is still silent.
    a.set("/api/printer", printer("Printing", true, false));
    let changed_at = Instant::now();
    expect(&mut c, &mut log, "a", "printing").await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(2),
        "a's change took {:?}",
        changed_at.elapsed()
    );

    // b is polled with back-off: each wait longer than the one before
    // (300 ms timeout + 100, 200, 400, 800 ms), while a keeps its 50 ms pace.
    let since_hang = || -> Vec<Instant> {
        b.seen("/api/printer")
            .iter()
            .map(|r| r.at)
            .filter(|at| *at >= hung_at)
            .collect()
    };
    wait_until("b polled 5 times since it hung", DEADLINE, || async {
        since_hang().len() >= 5
    })
    .await;
    let gaps: Vec<Duration> = since_hang().windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[3] >= gaps[0] + Duration::from_millis(400),
        "b's polls do not back off: {gaps:?}"
    );
    let a_polls = a
        .seen("/api/printer")
        .iter()
        .filter(|r| r.at >= hung_at)
        .count();
    assert!(a_polls >= 20, "a was polled {a_polls} times meanwhile");

    let (_, _, check) = get(&server, "/health/printers").await;
    assert_eq!(check["status"], "degraded", "{check}");
    assert_eq!(
        check["details"]["states"]["b"]["state"], "offline",
        "{check}"
    );
    assert_eq!(
        check["details"]["states"]["a"]["state"], "printing",
        "{check}"
    );

    // b answers again and is seen back within its back-off.
    b.set("/api/printer", printer("Operational", false, false));
    expect(&mut c, &mut log, "b", "idle").await;
    assert!(
        !log.iter()
            .any(|m| m["printer"] == "a" && m["state"] == "offline"),
        "a never went offline: {log:?}"
    );
    assert!(hung_at.elapsed() < DEADLINE);
    stop(server).await;
}

/// A browser lists the printers, pauses, resumes and cancels a print:
/// each command is OctoPrint's own `POST /api/job` body with the API key,
/// the reply is the state OctoPrint reports after it, and that state
/// reaches `$printers` without waiting for the next poll.
#[actix_rt::test]
async fn a_client_lists_pauses_resumes_and_cancels_prints_over_rpc() {
    let (a, b) = (Fake::start(true), Fake::start(true));
    a.set("/api/printer", printer("Printing", true, false));
    a.set("/api/job", job("benchy.gcode", 42.5));
    b.set("/api/printer", printer("Operational", false, false));
    for fake in [&a, &b] {
        fake.set("POST /api/job", Reply::raw(204, ""));
    }
    let mut s = printers(&[("mk4", &a), ("mini", &b)]);
    // Polls far apart: the states below come from the commands.
    for device in &mut s.printers.devices {
        device.interval_ms = 60_000;
    }
    let server = start(s).await;
    let mut c = member_of(&server, "$printers").await;
    a.open();
    b.open();
    let mut polled = [false, false];
    while polled != [true, true] {
        let change = next_in(&mut c, "$printers").await;
        polled[usize::from(change["printer"] == "mini")] = true;
    }

    let list = rpc(&mut c, "printers.list", Value::Null).await;
    assert_eq!(list["type"], "reply", "{list}");
    let printers = list["data"]["printers"].as_array().unwrap();
    let states: Vec<(&str, &str)> = printers
        .iter()
        .map(|p| (p["printer"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("mk4", "printing"), ("mini", "idle")], "{list}");
    assert_eq!(printers[0]["file"], "benchy.gcode");
    assert_eq!(printers[0]["progress"], 42.5);

    let status = rpc(&mut c, "printers.status", json!({"printer": "mini"})).await;
    assert_eq!(status["data"]["state"], "idle", "{status}");

    // OctoPrint reports paused once it took the command.
    a.set("/api/printer", paused("Paused"));
    let pause = rpc(&mut c, "printers.pause", json!({"printer": "mk4"})).await;
    assert_eq!(pause["type"], "reply", "{pause}");
    assert_eq!(pause["data"]["state"], "paused", "{pause}");
    let change = next_in(&mut c, "$printers").await;
    assert_eq!(
        (
            change["printer"].as_str(),
            change["state"].as_str(),
            change["previous"].as_str()
        ),
        (Some("mk4"), Some("paused"), Some("printing")),
        "{change}"
    );

    a.set("/api/printer", printer("Printing", true, false));
    let resume = rpc(&mut c, "printers.resume", json!({"printer": "mk4"})).await;
    assert_eq!(resume["data"]["state"], "printing", "{resume}");

    a.set("/api/printer", printer("Operational", false, false));
    let cancel = rpc(&mut c, "printers.cancel", json!({"printer": "mk4"})).await;
    assert_eq!(cancel["data"]["state"], "idle", "{cancel}");

    let commands: Vec<Value> = a
        .seen("POST /api/job")
        .into_iter()
        .map(|r| {
            assert_eq!(r.api_key.as_deref(), Some(KEY));
            r.body
        })
        .collect();
    assert_eq!(
        commands,
        [
            json!({"command": "pause", "action": "pause"}),
            json!({"command": "pause", "action": "resume"}),
            json!({"command": "cancel"}),
        ]
    );
    assert_eq!(b.count("POST /api/job"), 0);
    stop(server).await;
}

/// What OctoPrint refuses, what does not exist and what cannot be reached
/// are application errors with their own codes, on a connection that stays
/// open; nothing is sent for a request that names no printer.
#[actix_rt::test]
async fn refused_and_impossible_printer_commands_are_application_errors() {
    let (idle, down) = (Fake::start(false), Fake::start(false));
    idle.set("/api/printer", printer("Operational", false, false));
    idle.set(
        "POST /api/job",
        Reply::raw(409, r#"{"error":"Printer is not printing"}"#),
    );
    down.set("/api/printer", printer("Operational", false, false));
    down.set("POST /api/job", Reply::status(502));
    let server = start(printers(&[("mk4", &idle), ("far", &down)])).await;
    let mut c = connect(server.addr()).await;

    let busy = rpc(&mut c, "printers.pause", json!({"printer": "mk4"})).await;
    assert_eq!(
        (busy["type"].as_str(), busy["code"].as_str()),
        (Some("error"), Some("printer_busy")),
        "{busy}"
    );
    assert!(busy["message"].as_str().unwrap().contains("mk4"), "{busy}");

    let offline = rpc(&mut c, "printers.cancel", json!({"printer": "far"})).await;
    assert_eq!(offline["code"], "printer_offline", "{offline}");

    let unknown = rpc(&mut c, "printers.pause", json!({"printer": "nope"})).await;
    assert_eq!(unknown["code"], "unknown_printer", "{unknown}");
    let no_name = rpc(&mut c, "printers.pause", json!({"name": "mk4"})).await;
    assert_eq!(no_name["code"], "bad_request", "{no_name}");
    let no_method = rpc(&mut c, "printers.explode", json!({"printer": "mk4"})).await;
    assert_eq!(no_method["code"], "unknown_method", "{no_method}");

    assert_eq!(idle.count("POST /api/job"), 1);
    assert_eq!(down.count("POST /api/job"), 1);
    let pong = c.request(json!({"type": "ping", "id": "still-open"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    stop(server).await;
}

// ---------------------------------------------------------------------------
// files
// ---------------------------------------------------------------------------

diesel::table! {
    files (path) {
        path -> Text,
        directory -> Text,
        size -> BigInt,
        modified_at -> BigInt,
        sha256 -> Text,
        indexed_at -> BigInt,
    }
}

/// `(path, size, sha256)` of every row in the server's SQLite file.
fn rows(settings: &Settings) -> Vec<(String, i64, String)> {
    let url = settings.database.url.expose();
    let path = url.strip_prefix("sqlite://").unwrap();
    let Ok(mut conn) = diesel::sqlite::SqliteConnection::establish(path) else {
        return Vec::new();
    };
    let mut rows: Vec<(String, i64, String)> = files::table
        .select((files::path, files::size, files::sha256))
        .load(&mut conn)
        .unwrap_or_default();
    rows.sort();
    rows
}

async fn rows_when(
    settings: &Settings,
    what: &str,
    cond: impl Fn(&[(String, i64, String)]) -> bool,
) -> Vec<(String, i64, String)> {
    wait_until(what, DEADLINE, || async { cond(&rows(settings)) }).await;
    rows(settings)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_settings(dir: &Path) -> Settings {
    let mut s = settings();
    s.files.directories = vec![dir.display().to_string()];
    s.files.debounce_ms = 100;
    s.files.rescan_interval_ms = 200;
    s
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Create, change and delete print files: the `files` rows and the `$files`
/// messages follow (size, hash, name relative to the directory); files of
/// other types are ignored; subdirectories count.
#[actix_rt::test]
async fn print_files_are_indexed_and_their_changes_broadcast() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let s = files_settings(&dir);
    let server = start(s.clone()).await;
    let mut c = member_of(&server, "$files").await;
    let a = dir.join("a.gcode");

    std::fs::write(&a, b"G28\nG1 X10\n").unwrap();
    let added = next_in(&mut c, "$files").await;
    assert_eq!(added["event"], "added", "{added}");
    assert_eq!(added["path"], p(&a));
    assert_eq!(added["name"], "a.gcode");
    assert_eq!(added["directory"], p(&dir));
    assert_eq!(added["size"], 11);
    assert_eq!(added["sha256"], sha256(b"G28\nG1 X10\n"));
    assert!(added["modified_at"].is_string(), "{added}");
    rows_when(&s, "a.gcode indexed", |r| {
        r == [(p(&a), 11, sha256(b"G28\nG1 X10\n"))]
    })
    .await;

    // Not a print file: no row, no message (the next message is a.gcode's change).
    std::fs::write(dir.join("notes.txt"), b"remember the brim").unwrap();
    std::fs::write(&a, b"G28\nG1 X10\nG1 Y20\n").unwrap();
    let changed = next_in(&mut c, "$files").await;
    assert_eq!(changed["event"], "changed", "{changed}");
    assert_eq!(changed["path"], p(&a));
    assert_eq!(changed["size"], 18);
    assert_eq!(changed["sha256"], sha256(b"G28\nG1 X10\nG1 Y20\n"));
    rows_when(&s, "a.gcode re-indexed", |r| {
        r == [(p(&a), 18, sha256(b"G28\nG1 X10\nG1 Y20\n"))]
    })
    .await;

    std::fs::create_dir(dir.join("sub")).unwrap();
    let b = dir.join("sub").join("bracket.STL");
    std::fs::write(&b, b"solid bracket").unwrap();
    let added = next_in(&mut c, "$files").await;
    assert_eq!(
        (added["event"].as_str(), added["name"].as_str()),
        (Some("added"), Some("sub/bracket.STL")),
        "{added}"
    );

    std::fs::remove_file(&a).unwrap();
    let removed = next_in(&mut c, "$files").await;
    assert_eq!(removed["event"], "removed", "{removed}");
    assert_eq!(removed["path"], p(&a));
    let r = rows_when(&s, "only the bracket is left", |r| {
        r.len() == 1 && r[0].0 == p(&b)
    })
    .await;
    assert_eq!(r[0].2, sha256(b"solid bracket"));

    let (_, _, check) = get(&server, "/health/files").await;
    assert_eq!(check["status"], "healthy", "{check}");
    assert_eq!(check["details"]["files"], 1, "{check}");
    assert_eq!(check["details"]["pending_writes"], 0, "{check}");
    assert_eq!(
        check["details"]["directories"][0]["watched"], true,
        "{check}"
    );
    stop(server).await;
}

/// Deleting the watched directory removes its files (rows and messages);
/// re-creating it is noticed, and the new directory is watched: its files
/// are added and their changes seen.
#[actix_rt::test]
async fn the_watch_survives_the_directory_being_deleted_and_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prints");
    std::fs::create_dir(&dir).unwrap();
    let x = dir.join("x.gcode");
    std::fs::write(&x, b"G28").unwrap();
    let s = files_settings(&dir);
    let server = start(s.clone()).await;
    rows_when(&s, "x.gcode indexed at start", |r| {
        r.len() == 1 && r[0].0 == p(&x)
    })
    .await;
    let mut c = member_of(&server, "$files").await;

    std::fs::remove_dir_all(&dir).unwrap();
    let removed = next_in(&mut c, "$files").await;
    assert_eq!(
        (removed["event"].as_str(), removed["path"].as_str()),
        (Some("removed"), Some(p(&x).as_str())),
        "{removed}"
    );
    rows_when(&s, "no rows", |r| r.is_empty()).await;
    let (_, _, check) = get(&server, "/health/files").await;
    assert_eq!(
        check["details"]["directories"][0]["exists"], false,
        "{check}"
    );

    std::fs::create_dir(&dir).unwrap();
    // Once it is watched again (a file written before that is found by the
    // scan that follows the re-watch, after it by the watcher).
    let y = dir.join("y.3mf");
    std::fs::write(&y, b"PK\x03\x04 model").unwrap();
    let added = next_in(&mut c, "$files").await;
    assert_eq!(
        (added["event"].as_str(), added["path"].as_str()),
        (Some("added"), Some(p(&y).as_str())),
        "{added}"
    );
    wait_until("the directory watched again", DEADLINE, || async {
        get(&server, "/health/files").await.2["details"]["directories"][0]["watched"] == true
    })
    .await;

    // The watcher (not a rescan) sees a change in the new directory.
    std::fs::write(&y, b"PK\x03\x04 model v2").unwrap();
    let changed = next_in(&mut c, "$files").await;
    assert_eq!(
        (changed["event"].as_str(), changed["path"].as_str()),
        (Some("changed"), Some(p(&y).as_str())),
        "{changed}"
    );
    rows_when(&s, "y.3mf indexed with its new hash", |r| {
        let v2: &[u8] = b"PK\x03\x04 model v2";
        r == [(p(&y), v2.len() as i64, sha256(v2))]
    })
    .await;
    stop(server).await;
}

/// What changed while the server was down is caught up at start: a file
/// deleted meanwhile loses its row, a file added meanwhile gets one.
#[actix_rt::test]
async fn changes_while_stopped_are_caught_up_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let (old, new) = (dir.join("old.gcode"), dir.join("new.gcode"));
    std::fs::write(&old, b"old").unwrap();
    let s = files_settings(&dir);
    let server = start(s.clone()).await;
    rows_when(&s, "old.gcode indexed", |r| {
        r.len() == 1 && r[0].0 == p(&old)
    })
    .await;
    stop(server).await;

    std::fs::remove_file(&old).unwrap();
    std::fs::write(&new, b"new").unwrap();
    let server = start(s.clone()).await;
    rows_when(&s, "only new.gcode", |r| {
        r == [(p(&new), 3, sha256(b"new"))]
    })
    .await;
    stop(server).await;
}

/// `files.list` pages through the index by path; `files.search` finds
/// names (not directories) containing the query, any case, with `%` and
/// `_` taken literally; what is not configured or out of range is refused.
#[actix_rt::test]
async fn a_client_lists_and_searches_the_file_index_over_rpc() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prints");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let names = [
        "a50b.gcode",
        "Bracket_50%.STL",
        "benchy.gcode",
        "sub/clip.gcode",
    ];
    for name in names {
        std::fs::write(dir.join(name), name.as_bytes()).unwrap();
    }
    let s = files_settings(&dir);
    let server = start(s.clone()).await;
    rows_when(&s, "four files indexed", |r| r.len() == 4).await;
    let mut c = connect(server.addr()).await;

    let first = rpc(&mut c, "files.list", json!({"limit": 3})).await;
    assert_eq!(first["type"], "reply", "{first}");
    let page: Vec<&str> = first["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        page,
        ["Bracket_50%.STL", "a50b.gcode", "benchy.gcode"],
        "{first}"
    );
    let next = first["data"]["next"].clone();
    assert_eq!(next, p(&dir.join("benchy.gcode")));
    let second = rpc(
        &mut c,
        "files.list",
        json!({"limit": 3, "after": next, "directory": p(&dir)}),
    )
    .await;
    let f = &second["data"]["files"][0];
    assert_eq!(f["name"], "sub/clip.gcode", "{second}");
    assert_eq!(f["size"], 14);
    assert_eq!(f["sha256"], sha256(b"sub/clip.gcode"));
    assert!(f["modified_at"].is_string(), "{second}");
    assert_eq!(
        second["data"]["files"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    assert_eq!(second["data"]["next"], Value::Null, "{second}");

    let search = |q: &str| json!({"query": q});
    let found = rpc(&mut c, "files.search", search("BRACK")).await;
    assert_eq!(
        found["data"]["files"][0]["name"], "Bracket_50%.STL",
        "{found}"
    );
    let literal = rpc(&mut c, "files.search", search("50%")).await;
    let hits: Vec<&str> = literal["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(hits, ["Bracket_50%.STL"], "% is not a wildcard: {literal}");
    let dirs = rpc(&mut c, "files.search", search("prints")).await;
    assert_eq!(
        dirs["data"]["files"],
        json!([]),
        "directories do not match: {dirs}"
    );

    for (method, data, code) in [
        (
            "files.list",
            json!({"directory": "/elsewhere"}),
            "unknown_directory",
        ),
        ("files.list", json!({"limit": 0}), "bad_request"),
        ("files.list", json!({"limit": 1001}), "bad_request"),
        ("files.search", search(""), "bad_request"),
        ("files.search", Value::Null, "bad_request"),
        ("files.delete", Value::Null, "unknown_method"),
    ] {
        let refused = rpc(&mut c, method, data).await;
        assert_eq!(refused["code"], code, "{method}: {refused}");
    }
    stop(server).await;
}
