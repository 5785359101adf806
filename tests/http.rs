//! The server in-process on a free port, through a real HTTP client: the
//! health endpoints, their status codes, metrics, errors, request ids, and
//! what supervision looks like from outside.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use holdfast::actors::health::{Health, HealthReply, Status};
use holdfast::actors::shutdown::{Outcome, ShutdownReason, Stage};
use holdfast::actors::supervision::{Backoff, Child, ChildSpec};
use holdfast::server::Builder;

use common::{get, metrics_at, metrics_text, settings, start_server, wait_until};

/// A service whose health the test sets, and which panics on `Boom`.
struct Moody {
    status: Arc<Mutex<Status>>,
    /// Survives restarts: how many incarnations were built.
    starts: Arc<AtomicU64>,
    /// Never answer health (a stuck actor).
    mute: bool,
    /// How long a graceful stop takes.
    stop_delay: Duration,
}

impl Actor for Moody {
    type Context = Context<Self>;
}

impl Child for Moody {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        if self.mute {
            return HealthReply::Pending(Box::pin(actix::fut::wrap_future(
                futures::future::pending(),
            )));
        }
        let status = *self.status.lock().unwrap();
        Health::healthy()
            .with_status(status)
            .with("starts", self.starts.load(Ordering::SeqCst))
            .into()
    }

    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.stop_delay, |_, ctx| ctx.stop());
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Moody {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("moody exploded on purpose");
    }
}

struct MoodyHandle {
    status: Arc<Mutex<Status>>,
    starts: Arc<AtomicU64>,
    spec: ChildSpec<Moody>,
}

fn moody(name: &str, critical: bool, mute: bool, stop_delay: Duration) -> MoodyHandle {
    let status = Arc::new(Mutex::new(Status::Healthy));
    let starts = Arc::new(AtomicU64::new(0));
    let (s, n) = (status.clone(), starts.clone());
    let spec = ChildSpec::new(name, move |_| {
        n.fetch_add(1, Ordering::SeqCst);
        Moody {
            status: s.clone(),
            starts: n.clone(),
            mute,
            stop_delay,
        }
    })
    .critical(critical)
    .backoff(Backoff::none());
    MoodyHandle {
        status,
        starts,
        spec,
    }
}

/// Live, ready, health and metrics all answer on a fresh server, and
/// `/health` carries version, uptime, process figures and every actor.
#[actix_rt::test]
async fn live_ready_health_and_metrics_answer() {
    let server = start_server().await;
    for path in ["/health/live", "/livez", "/health/ready", "/readyz"] {
        assert_eq!(get(&server, path).await.0, 200, "{path}");
    }
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.lines().any(|l| l == "holdfast_ready 1"),
        "holdfast_ready once ready"
    );
    let (status, _, body) = get(&server, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].as_f64().unwrap() >= 0.0);
    assert!(
        body["process"]["rss_bytes"].as_u64().unwrap() > 1_000_000,
        "{body}"
    );
    assert!(body["process"]["cpu_seconds"].is_number());
    for name in ["http", "core", "events", "scheduler", "services"] {
        let check = &body["checks"][name];
        assert_eq!(check["status"], "healthy", "{name}: {check}");
        assert!(
            check["latency_ms"].is_number() && check["restarts"] == 0,
            "{name}: {check}"
        );
    }
    assert_eq!(body["checks"]["events"]["supervisor"], "core");

    let res = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for metric in [
        "# TYPE holdfast_http_requests_total counter",
        "# TYPE holdfast_http_request_duration_seconds histogram",
        "holdfast_actor_health{actor=\"scheduler\",status=\"healthy\"} 1",
        "# TYPE process_resident_memory_bytes gauge",
        "holdfast_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
        // The README's families exist at 0 from the start, for every actor.
        "holdfast_actor_restarts_total{actor=\"scheduler\"} 0",
        "holdfast_actor_failures_total{actor=\"rooms-0\"} 0",
        "holdfast_supervisor_escalations_total{supervisor=\"root\"} 0",
        "holdfast_supervisor_escalations_total{supervisor=\"rooms\"} 0",
    ] {
        assert!(text.contains(metric), "missing {metric:?} in:\n{text}");
    }
}

/// `/health/{name}` answers one actor's check; an unknown name is a JSON 404.
#[actix_rt::test]
async fn health_by_name_answers_one_check() {
    let server = start_server().await;
    let (status, _, body) = get(&server, "/health/scheduler").await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "scheduler");
    assert_eq!(body["status"], "healthy");
    assert_eq!(
        body["details"]["tasks"], 2,
        "health-watch and session-expiry: {body}"
    );
    let (status, _, body) = get(&server, "/health/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    assert!(body["message"].as_str().unwrap().contains("nope"));
}

/// 404 and 405 have JSON bodies and keep the CORS headers for an allowed origin.
#[actix_rt::test]
async fn errors_have_json_bodies_and_keep_cors_headers() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr());
    for (method, path, code, status) in [
        (reqwest::Method::GET, "/no/such/route", "not_found", 404),
        (
            reqwest::Method::DELETE,
            "/health",
            "method_not_allowed",
            405,
        ),
    ] {
        let res = client
            .request(method, format!("{base}{path}"))
            .header("Origin", "http://localhost:3000")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "http://localhost:3000"
        );
        assert!(res.headers().contains_key("x-request-id"));
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], code);
        assert!(body["message"].as_str().unwrap().contains(path), "{body}");
    }
    // An origin that is not allowed gets no CORS grant.
    let res = client
        .get(format!("{base}/health/live"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

/// A plain `X-Request-Id` is echoed; a missing or hostile one is replaced.
#[actix_rt::test]
async fn request_id_is_echoed_or_generated() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/health/live", server.addr());
    let res = client
        .get(&url)
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = client.get(&url).send().await.unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let res = client
        .get(&url)
        .header("X-Request-Id", "a b\"c")
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], "a b\"c");
}

/// A critical actor that turns unhealthy makes `/health` 503 and readiness
/// 503; a non-critical one only degrades `/health`, which stays 200.
#[actix_rt::test]
async fn criticality_decides_health_and_readiness() {
    let critical = moody("payments", true, false, Duration::ZERO);
    let optional = moody("recommendations", false, false, Duration::ZERO);
    let (crit_status, opt_status) = (critical.status.clone(), optional.status.clone());
    let server = Builder::new(settings())
        .service(critical.spec)
        .service(optional.spec)
        .start()
        .await
        .unwrap();
    assert_eq!(get(&server, "/health").await.2["status"], "healthy");

    *opt_status.lock().unwrap() = Status::Unhealthy;
    let (status, _, body) = get(&server, "/health").await;
    assert_eq!(
        (status, body["status"].as_str().unwrap()),
        (200, "degraded")
    );
    assert_eq!(get(&server, "/health/ready").await.0, 200);
    assert_eq!(get(&server, "/health/recommendations").await.0, 503);

    *crit_status.lock().unwrap() = Status::Degraded;
    *opt_status.lock().unwrap() = Status::Healthy;
    let (status, _, body) = get(&server, "/health").await;
    assert_eq!(
        (status, body["status"].as_str().unwrap()),
        (200, "degraded")
    );
    assert_eq!(get(&server, "/health/ready").await.0, 200);

    *crit_status.lock().unwrap() = Status::Unhealthy;
    let (status, _, body) = get(&server, "/health").await;
    assert_eq!(
        (status, body["status"].as_str().unwrap()),
        (503, "unhealthy")
    );
    let (status, _, body) = get(&server, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(
        body["reason"].as_str().unwrap().contains("payments"),
        "{body}"
    );
}

/// An actor that never answers its health request is unhealthy after the
/// deadline, and the rest of the tree still answers.
#[actix_rt::test]
async fn a_stuck_actor_is_reported_unhealthy_at_the_deadline() {
    let mut s = settings();
    s.health.timeout_ms = 200;
    let stuck = moody("stuck", false, true, Duration::ZERO);
    let server = Builder::new(s).service(stuck.spec).start().await.unwrap();
    let started = std::time::Instant::now();
    let (status, _, body) = get(&server, "/health").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        (status, body["status"].as_str().unwrap()),
        (200, "degraded")
    );
    let check = &body["checks"]["stuck"];
    assert_eq!(check["status"], "unhealthy");
    assert!(
        check["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{check}"
    );
    assert_eq!(body["checks"]["scheduler"]["status"], "healthy");
}

/// A panic in a service's handler restarts it; `/health` shows the restart
/// and the panic message, `/metrics` counts it, and its outside state survives.
#[actix_rt::test]
async fn a_panicking_service_is_restarted_and_health_shows_it() {
    let svc = moody("moody", true, false, Duration::ZERO);
    let (addr_ref, starts) = (svc.spec.child_ref(), svc.starts.clone());
    let server = Builder::new(settings())
        .service(svc.spec)
        .start()
        .await
        .unwrap();
    let first = addr_ref.addr().unwrap();
    first.do_send(Boom);
    wait_until("the restart", Duration::from_secs(5), || {
        let starts = starts.clone();
        async move { starts.load(Ordering::SeqCst) == 2 }
    })
    .await;
    let (_, _, check) = get(&server, "/health/moody").await;
    assert_eq!(check["restarts"], 1, "{check}");
    assert_eq!(check["status"], "healthy");
    assert!(
        check["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("moody exploded on purpose"),
        "{check}"
    );
    assert_eq!(check["details"]["starts"], 2);
    let text = common::metrics_text(&server).await;
    assert!(
        text.contains("holdfast_actor_restarts_total{actor=\"moody\"} 1"),
        "{text}"
    );
    assert!(text.contains("holdfast_actor_failures_total{actor=\"moody\"} 1"));
    // The rest of the server never noticed.
    assert_eq!(get(&server, "/health/ready").await.0, 200);
}

/// A crash loop past the root's intensity runs the staged shutdown and ends
/// with exit code 70.
#[actix_rt::test]
async fn escalation_at_the_root_ends_with_exit_code_70() {
    let mut s = settings();
    s.supervision.max_restarts = 1;
    s.supervision.backoff_min_ms = 1;
    let doomed =
        ChildSpec::new("doomed", |_| -> Moody { panic!("cannot start") }).backoff(Backoff::none());
    let server = Builder::new(s).service(doomed).start().await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), server.run_until_stopped())
        .await
        .expect("shutdown");
    assert_eq!(report.exit_code, 70);
    match &report.reason {
        ShutdownReason::Escalation { supervisor, reason } => {
            assert_eq!(supervisor, "root");
            assert!(reason.contains("services"), "{reason}");
        }
        other => panic!("not an escalation: {other:?}"),
    }
}

/// Readiness is 503 from the first moment of a shutdown, while a slow
/// service still stops; the report then shows every stage in order.
#[actix_rt::test]
async fn readiness_is_503_for_the_whole_shutdown() {
    let slow = moody("slow", false, false, Duration::from_millis(600));
    let mut s = settings();
    // The listener stays open this long after the request, so readiness can
    // be read; with no delay the intake stage may already have closed it.
    s.shutdown.drain_delay_ms = 2000;
    let server = Builder::new(s).service(slow.spec).start().await.unwrap();
    let addr = server.addr();
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let running = actix_rt::spawn(server.run_until_stopped());
    let res = reqwest::get(format!("http://{addr}/health/ready"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["reason"], "draining");
    // The gauge that alerting reads says the same.
    let metrics = metrics_at(addr).await;
    assert!(
        metrics.lines().any(|l| l == "holdfast_ready 0"),
        "holdfast_ready while draining"
    );
    let report = running.await.unwrap();
    let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, Stage::ORDER.to_vec());
    let slow = report.actor("slow").unwrap();
    assert_eq!(
        (slow.stage, slow.outcome),
        (Stage::Services, Outcome::Stopped)
    );
    assert!(slow.ms >= 550, "{slow:?}");
    assert_eq!(report.exit_code, 0);
    assert!(report.total_ms <= report.bound_ms);
}

/// A service added while the server runs appears in `/health` and stops
/// with the others.
#[actix_rt::test]
async fn a_service_added_at_run_time_appears_in_health() {
    let server = start_server().await;
    server
        .add_service(moody("late", false, false, Duration::ZERO).spec)
        .await
        .unwrap();
    let (status, _, check) = get(&server, "/health/late").await;
    assert_eq!(status, 200);
    assert_eq!(check["supervisor"], "services");
    let dup = server
        .add_service(moody("late", false, false, Duration::ZERO).spec)
        .await;
    assert!(dup.is_err());
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let report = server.run_until_stopped().await;
    assert_eq!(report.actor("late").unwrap().outcome, Outcome::Stopped);
}

/// Liveness reflects progress: an event loop whose thread is blocked (a
/// handler stuck in a blocking call) turns `/health/live` into 503 naming
/// that loop, and liveness is 200 again once the loop runs.
#[actix_rt::test]
async fn a_stalled_event_loop_fails_liveness_until_it_runs_again() {
    let mut s = settings();
    s.health.timeout_ms = 200;
    let server = Builder::new(s).start().await.unwrap();
    let (status, _, body) = get(&server, "/health/live").await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("live")));

    let (_, rooms_0) = server
        .event_loops()
        .iter()
        .find(|(name, _)| name == "rooms-0")
        .expect("rooms-0 is watched")
        .clone();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (blocked_tx, blocked) = tokio::sync::oneshot::channel();
    assert!(rooms_0.spawn(async move {
        let _ = blocked_tx.send(());
        // Blocks the loop's thread on purpose, until the test releases it.
        let _ = released.recv();
    }));
    blocked.await.unwrap();
    let (status, _, body) = get(&server, "/health/live").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "stalled");
    assert_eq!(body["stalled"], serde_json::json!(["rooms-0"]));

    release.send(()).unwrap();
    wait_until("liveness is 200 again", Duration::from_secs(5), || async {
        get(&server, "/health/live").await.0 == 200
    })
    .await;
}

/// The JavaScript client is served from the binary, as `clients/js/` holds
/// it, with an ETag that a browser revalidates against (304), and the
/// modules it imports next to it.
#[actix_rt::test]
async fn the_javascript_client_is_served_from_the_binary() {
    let server = start_server().await;
    let url = |path: &str| format!("http://{}{path}", server.addr());
    let res = reqwest::get(url("/client/holdfast.js")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let tag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    assert_eq!(body, include_str!("../clients/js/holdfast.js"));
    for import in ["./lib/client.js", "./lib/room.js", "./lib/errors.js"] {
        assert!(body.contains(import), "holdfast.js imports {import}");
        let path = format!("/client/{}", import.trim_start_matches("./"));
        assert_eq!(
            reqwest::get(url(&path)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let again = reqwest::Client::new()
        .get(url("/client/holdfast.js"))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let (status, _, body) = get(&server, "/client/nothing.js").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found", "{body}");
}

/// The demo is on by default: `/` is its page and `/health` shows its
/// moderator; `demo.enabled = false` leaves `/` to the application (the
/// JSON 404 here) and adds no actor.
#[actix_rt::test]
async fn the_demo_is_served_at_the_root_unless_turned_off() {
    let server = start_server().await;
    let res = reqwest::get(format!("http://{}/", server.addr()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let page = res.text().await.unwrap();
    assert!(page.contains(r#"src="/demo/demo.js""#), "{page}");
    let (status, _, _) = get(&server, "/demo/demo.js").await;
    assert_eq!(status, 200);
    assert_eq!(get(&server, "/health/demo-moderator").await.0, 200);

    let mut off = settings();
    off.demo.enabled = false;
    let server = Builder::new(off).start().await.expect("starts");
    let (status, _, body) = get(&server, "/").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(get(&server, "/health/demo-moderator").await.0, 404);
}
