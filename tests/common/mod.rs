//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod chaos;
pub mod client_frame;
pub mod fake_http;
pub mod raw;
pub mod services;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::time::{Duration, Instant};

use holdfast::server::{Builder, Server, Settings};

/// The embedded defaults on a free port, with a SQLite file of its own (so
/// that tests running at once never share rooms or sessions).
pub fn settings() -> Settings {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("holdfast-test-{}-{n}", std::process::id()));
    let mut settings = Settings::defaults();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.database.url = serde_json::from_value(serde_json::json!(format!(
        "sqlite://{}/holdfast.db",
        dir.display()
    )))
    .expect("a database URL");
    settings
}

/// Starts a server on a free port with the defaults.
pub async fn start_server() -> Server {
    Builder::new(settings())
        .start()
        .await
        .expect("server starts")
}

/// GETs `path` from the server; returns status, headers and JSON body.
pub async fn get(
    server: &Server,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let res = reqwest::get(format!("http://{}{path}", server.addr()))
        .await
        .expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, body)
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` at the deadline.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        eventually(timeout, cond).await,
        "timed out after {timeout:?} waiting for: {what}"
    );
}

/// Polls `cond` every 10 ms until it holds (true) or `timeout` passes
/// (false): for callers that report a timeout themselves. The one poll tick
/// of the test helpers lives here.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &Server) -> String {
    metrics_at(server.addr()).await
}

/// `/metrics` of the server at `addr` (one whose `Server` is busy
/// shutting down, say).
pub async fn metrics_at(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn metric(server: &Server, name: &str) -> f64 {
    let text = metrics_text(server).await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
