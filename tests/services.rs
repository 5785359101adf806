//! The domain services against things the tests control: `trending` against
//! a local HTTP server (and an HTTPS one whose certificate a CA made for the
//! test signed), `printers` against fake OctoPrint servers, `files`
//! against a temporary directory and the server's own SQLite file. What they
//! broadcast is read by a real WebSocket client in the system rooms.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use holdfast::actors::shutdown::ShutdownReason;
use holdfast::server::config::{FeedSettings, PrinterSettings, Secret};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use common::tls::TestPki;
use common::ws::{connect, Client};
use common::{get, settings, wait_until};

const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// A fake HTTP server, on a thread and runtime of its own, so that a reply
// it holds back never holds back the server under test.
// ---------------------------------------------------------------------------

/// One reply of the fake.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    /// Held back this long before it is written.
    delay: Duration,
}

impl Reply {
    fn json(v: Value) -> Self {
        Self::raw(200, v.to_string())
    }

    fn status(status: u16) -> Self {
        Self::raw(status, json!({"error": status}).to_string())
    }

    fn raw(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    at: Instant,
    api_key: Option<String>,
}

#[derive(Default)]
struct FakeState {
    /// Replies per path, used up in order...
    scripts: HashMap<String, VecDeque<Reply>>,
    /// ...then this one, again and again.
    defaults: HashMap<String, Reply>,
    seen: Vec<Seen>,
    connections: usize,
}

struct Fake {
    addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    state: Arc<Mutex<FakeState>>,
    gate: tokio::sync::watch::Sender<bool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fake {
    /// A fake answering every request; with `gated`, replies wait for `open`.
    fn start(gated: bool) -> Fake {
        Self::launch(gated, None)
    }

    /// The same over TLS, with the certificate `tls` serves (`https://` URLs).
    fn start_tls(gated: bool, tls: tokio_rustls::TlsAcceptor) -> Fake {
        Self::launch(gated, Some(tls))
    }

    fn launch(gated: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Fake {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let (gate, gate_rx) = tokio::sync::watch::channel(!gated);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        shared.lock().unwrap().connections += 1;
                        let (state, gate) = (shared.clone(), gate_rx.clone());
                        match tls.clone() {
                            None => {
                                tokio::spawn(serve(stream, state, gate));
                            }
                            Some(tls) => {
                                tokio::spawn(async move {
                                    // A client that refuses the certificate ends here.
                                    if let Ok(stream) = tls.accept(stream).await {
                                        serve(stream, state, gate).await;
                                    }
                                });
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        Fake {
            addr,
            scheme,
            state,
            gate,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Replies to `path` with `reply` from now on.
    fn set(&self, path: &str, reply: Reply) {
        let mut s = self.state.lock().unwrap();
        s.scripts.remove(path);
        s.defaults.insert(path.into(), reply);
    }

    /// Replies to `path` with these, in order, then with the default.
    fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.into(), replies.into());
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let s = self.state.lock().unwrap();
        s.seen.iter().filter(|r| r.path == path).cloned().collect()
    }

    fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}

/// Serves one connection (TCP, or TLS over it): HTTP/1.1 GETs, kept alive.
async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    state: Arc<Mutex<FakeState>>,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let api_key = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-api-key")
                .then(|| v.trim().to_owned())
        });
        state.lock().unwrap().seen.push(Seen {
            path: path.clone(),
            at: Instant::now(),
            api_key,
        });
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let reply = {
            let mut s = state.lock().unwrap();
            let scripted = s.scripts.get_mut(&path).and_then(VecDeque::pop_front);
            scripted
                .or_else(|| s.defaults.get(&path).cloned())
                .unwrap_or_else(|| Reply::status(404))
        };
        tokio::time::sleep(reply.delay).await;
        let mut out = format!(
            "HTTP/1.1 {} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

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

// ---------------------------------------------------------------------------
// printers
// ---------------------------------------------------------------------------

fn printer(text: &str, printing: bool, error: bool) -> Reply {
    Reply::json(json!({
        "state": {
            "text": text,
            "flags": {
                "operational": !error, "printing": printing, "paused": false, "pausing": false,
                "cancelling": false, "error": error, "ready": !printing, "closedOrError": error,
                "sdReady": false,
            }
        },
        "temperature": {"tool0": {"actual": 214.8, "target": 215.0}, "bed": {"actual": 60.1, "target": 60.0}}
    }))
}

fn job(file: &str, completion: f64) -> Reply {
    Reply::json(json!({
        "job": {"file": {"name": file, "origin": "local"}, "estimatedPrintTime": 3600},
        "progress": {"completion": completion, "printTime": 600, "printTimeLeft": 3000},
        "state": "Printing"
    }))
}

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
