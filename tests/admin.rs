//! The admin API (`/admin`) in-process on a free port, through a real HTTP
//! client and a real WebSocket client: off without a token, bearer token
//! checked, the live tree, operator restarts, chaos crashes that supervision
//! absorbs without dropping clients, and a shutdown that takes SIGTERM's path.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use holdfast::actors::shutdown::{Outcome, ShutdownReason, Stage};
use holdfast::actors::supervision::{Backoff, Child, ChildSpec};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};

use common::ws::connect;
use common::{get, settings, wait_until};

const TOKEN: &str = "test-admin-token-0123456789";

/// Settings with the admin API on (and chaos as given).
fn admin_settings(chaos: bool) -> Settings {
    let mut s = settings();
    s.admin.token = holdfast::server::config::Secret::new(TOKEN);
    s.admin.chaos = chaos;
    s
}

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

/// Sends `method path` with `Authorization: Bearer <token>` when given;
/// answers status, headers and the JSON body.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", server.addr()));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

async fn admin_get(server: &Server, path: &str) -> Value {
    let (status, _, body) = call(server, reqwest::Method::GET, path, Some(TOKEN)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn admin_post(server: &Server, path: &str) -> (u16, Value) {
    let (status, _, body) = call(server, reqwest::Method::POST, path, Some(TOKEN)).await;
    (status, body)
}

/// The `/admin/actors` entry of `name`.
async fn actor(server: &Server, name: &str) -> Value {
    let body = admin_get(server, "/admin/actors").await;
    body["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no actor {name} in {body}"))
        .clone()
}

/// A service whose incarnations the test counts (in its factory).
struct Counted;

impl Actor for Counted {
    type Context = Context<Self>;
}

impl Child for Counted {}

fn counted(name: &str) -> (ChildSpec<Counted>, Arc<AtomicU64>) {
    let starts = Arc::new(AtomicU64::new(0));
    let n = starts.clone();
    let spec = ChildSpec::new(name, move |_| {
        n.fetch_add(1, Ordering::SeqCst);
        Counted
    })
    .critical(false)
    .backoff(Backoff::none());
    (spec, starts)
}

/// Without `admin.token`, every `/admin` route is the JSON 404 of an
/// unknown route, and a shutdown request through it does nothing.
#[actix_rt::test]
async fn without_a_token_the_admin_api_does_not_exist() {
    let server = start(settings()).await;
    for (method, path) in [
        (reqwest::Method::GET, "/admin/actors"),
        (reqwest::Method::GET, "/admin/tasks"),
        (reqwest::Method::POST, "/admin/shutdown"),
        (reqwest::Method::POST, "/admin/actors/scheduler/crash"),
    ] {
        let (status, headers, body) = call(&server, method, path, Some("anything")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["code"], "not_found", "{body}");
    }
    assert_eq!(
        get(&server, "/health/ready").await.0,
        200,
        "no shutdown began"
    );
}

/// With a token, a missing or wrong one is a JSON 401 on every path under
/// `/admin` (unknown ones included, so routes cannot be probed), and the
/// token is never echoed; the right one opens the API.
#[actix_rt::test]
async fn a_missing_or_wrong_token_is_401() {
    let server = start(admin_settings(true)).await;
    let wrong = format!("{TOKEN}x");
    for token in [None, Some("nope"), Some(wrong.as_str()), Some(&TOKEN[..20])] {
        for (method, path) in [
            (reqwest::Method::GET, "/admin/actors"),
            (reqwest::Method::POST, "/admin/shutdown"),
            (reqwest::Method::POST, "/admin/actors/scheduler/crash"),
            (reqwest::Method::GET, "/admin/no-such-route"),
        ] {
            let (status, headers, body) = call(&server, method, path, token).await;
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            assert_eq!(body["code"], "unauthorized");
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert!(headers.contains_key("x-request-id"));
            assert!(!body.to_string().contains(&TOKEN[..10]), "{body}");
        }
    }
    // Still serving, never shut down, nothing crashed.
    assert_eq!(get(&server, "/health/ready").await.0, 200);
    assert_eq!(actor(&server, "scheduler").await["restarts"], 0);
    let (status, _, body) = call(
        &server,
        reqwest::Method::GET,
        "/admin/no-such-route",
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

/// `GET /admin/actors` lists every actor of the tree (the same set as
/// `/health`), each with its supervisor, status, criticality, restarts,
/// uptime and last failure.
#[actix_rt::test]
async fn the_tree_lists_every_actor() {
    let (spec, _) = counted("greeter");
    let server = Builder::new(admin_settings(false))
        .service(spec)
        .start()
        .await
        .unwrap();
    let body = admin_get(&server, "/admin/actors").await;
    assert_eq!(body["status"], "healthy", "{body}");
    let actors = body["actors"].as_array().unwrap();
    let listed: BTreeSet<String> = actors
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    let (_, _, health) = get(&server, "/health").await;
    let in_health: BTreeSet<String> = health["checks"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(listed, in_health);
    assert_eq!(listed.len(), actors.len(), "each actor once");
    let shards = server.rooms().shard_count();
    let mut expected = vec![
        ("http", "root"),
        ("realtime", "root"),
        ("connections", "realtime"),
        ("rooms", "realtime"),
        ("core", "root"),
        ("events", "core"),
        ("scheduler", "core"),
        ("services", "root"),
        ("greeter", "services"),
    ];
    let hubs: Vec<String> = (0..shards).map(|i| format!("rooms-{i}")).collect();
    expected.extend(hubs.iter().map(|h| (h.as_str(), "rooms")));
    for (name, supervisor) in expected {
        let a = actors
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {body}"));
        assert_eq!(a["supervisor"], supervisor, "{a}");
        assert_eq!(a["status"], "healthy", "{a}");
        assert_eq!(a["restarts"], 0, "{a}");
        assert!(a["critical"].is_boolean(), "{a}");
        assert!(a["uptime_s"].as_f64().unwrap() >= 0.0, "{a}");
        assert!(a["last_failure"].is_null(), "{a}");
    }
    assert_eq!(
        actors.iter().find(|a| a["name"] == "greeter").unwrap()["critical"],
        false
    );
}

/// `POST /admin/actors/{name}/restart` stops the actor gracefully and starts
/// a new incarnation through its supervisor: the restart count rises, the
/// event is published, the actor answers again; an unknown name is a 404
/// and the root a 409.
#[actix_rt::test]
async fn an_operator_restart_raises_the_restart_count() {
    let (spec, starts) = counted("greeter");
    let server = Builder::new(admin_settings(false))
        .service(spec)
        .start()
        .await
        .unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    let (status, body) = admin_post(&server, "/admin/actors/greeter/restart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["actor"], "greeter");
    assert_eq!(body["supervisor"], "services");
    assert_eq!(body["stop"], "stopped");
    assert_eq!(body["restarts"], 1);
    assert_eq!(
        starts.load(Ordering::SeqCst),
        2,
        "a new incarnation was built"
    );
    let a = actor(&server, "greeter").await;
    assert_eq!(
        (a["restarts"].as_u64(), a["status"].as_str()),
        (Some(1), Some("healthy")),
        "{a}"
    );
    assert!(
        a["last_failure"].is_null(),
        "an operator restart is no failure: {a}"
    );

    // A nested actor and a supervisor restart the same way.
    let (status, body) = admin_post(&server, "/admin/actors/scheduler/restart").await;
    assert_eq!(
        (status, body["restarts"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let (status, body) = admin_post(&server, "/admin/actors/core/restart").await;
    assert_eq!(
        (status, body["restarts"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let tasks = admin_get(&server, "/admin/tasks").await;
    assert!(tasks["tasks"].as_array().unwrap().len() >= 2, "{tasks}");

    let events = admin_get(&server, "/admin/events?n=1000").await;
    let restarted: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "actor_restarted")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    for name in ["greeter", "scheduler", "core"] {
        assert!(restarted.contains(&name), "{name} not in {restarted:?}");
    }
    let text = common::metrics_text(&server).await;
    assert!(
        text.contains("holdfast_actor_restarts_total{actor=\"greeter\"} 1"),
        "{text}"
    );

    let (status, body) = admin_post(&server, "/admin/actors/nobody/restart").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("nobody"));
    let (status, body) = admin_post(&server, "/admin/actors/root/restart").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert_eq!(get(&server, "/health/ready").await.0, 200);
}

/// `GET /admin/tasks` lists the scheduler's tasks; `GET /admin/events?n=`
/// the most recent `n` events, oldest first; a bad `n` is a JSON 400.
#[actix_rt::test]
async fn tasks_and_recent_events_are_listed() {
    let server = start(admin_settings(false)).await;
    let tasks = admin_get(&server, "/admin/tasks").await;
    let names: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"health-watch") && names.contains(&"session-expiry"),
        "{tasks}"
    );
    let task = &tasks["tasks"][0];
    for field in ["schedule", "running", "runs", "failures", "last_run"] {
        assert!(task.get(field).is_some(), "{field} in {task}");
    }

    let all = admin_get(&server, "/admin/events").await;
    let all = all["events"].as_array().unwrap();
    assert!(all
        .iter()
        .any(|e| e["kind"] == "actor_started" && e["actor"] == "scheduler"));
    let three = admin_get(&server, "/admin/events?n=3").await;
    let three = three["events"].as_array().unwrap();
    assert_eq!(three.len(), 3);
    let seqs: Vec<u64> = three.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first, contiguous: {seqs:?}"
    );
    assert_eq!(
        seqs[2],
        all.last().unwrap()["seq"].as_u64().unwrap(),
        "the most recent ones"
    );

    let (status, _, body) = call(
        &server,
        reqwest::Method::GET,
        "/admin/events?n=many",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
}

/// With `admin.chaos`, crashing a room hub and the event bus makes each
/// really panic and be restarted by its supervisor (restart count and last
/// failure show it), while a WebSocket client stays connected throughout:
/// it still gets pongs, its room messages continue at the next offset.
#[actix_rt::test]
async fn a_chaos_crash_restarts_the_actor_and_clients_stay_connected() {
    let server = start(admin_settings(true)).await;
    let mut client = connect(server.addr()).await;
    client.join("lobby").await;
    let ack = client
        .request(json!({"type": "publish", "room": "lobby", "data": {"n": 1}, "id": "p1"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["offset"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );

    let hub = format!("rooms-{}", server.rooms().shard_of("lobby"));
    for name in [hub.as_str(), "events"] {
        let (status, body) = admin_post(&server, &format!("/admin/actors/{name}/crash")).await;
        assert_eq!(status, 202, "{body}");
        wait_until(
            &format!("{name} restarted after its crash"),
            Duration::from_secs(10),
            || async {
                let a = actor(&server, name).await;
                a["restarts"] == 1 && a["status"] == "healthy"
            },
        )
        .await;
        let a = actor(&server, name).await;
        let reason = a["last_failure"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("panicked") && reason.contains("crashed on purpose"),
            "{a}"
        );

        let pong = client.request(json!({"type": "ping", "id": name})).await;
        assert_eq!(
            (pong["type"].as_str(), pong["id"].as_str()),
            (Some("pong"), Some(name)),
            "{pong}"
        );
    }
    client
        .send(json!({"type": "publish", "room": "lobby", "data": {"n": 2}, "id": "p2"}))
        .await;
    let (mut message, mut ack) = (Value::Null, Value::Null);
    while message.is_null() || ack.is_null() {
        let v = client.recv().await;
        match v["type"].as_str() {
            Some("message") => message = v,
            Some("ack") => ack = v,
            _ => panic!("unexpected frame {v}"),
        }
    }
    assert_eq!(
        message["offset"], 2,
        "offsets continue across the crash: {message}"
    );
    assert_eq!(message["data"]["n"], 2);
    assert_eq!(ack["offset"], 2);

    let events = admin_get(&server, "/admin/events?n=1000").await;
    let failed: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "actor_failed")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&hub.as_str()) && failed.contains(&"events"),
        "{failed:?}"
    );

    // A supervisor crashes too: its hubs go down with it and come back
    // under its next incarnation, rooms intact; an unknown actor is a 404.
    let (status, body) = admin_post(&server, "/admin/actors/rooms/crash").await;
    assert_eq!(status, 202, "{body}");
    wait_until(
        "the rooms supervisor restarted",
        Duration::from_secs(10),
        || async {
            get(&server, "/health/rooms").await.2["restarts"].as_u64() >= Some(1)
                && get(&server, "/health/ready").await.0 == 200
        },
    )
    .await;
    let ack = client
        .request(json!({"type": "publish", "room": "lobby", "data": {"n": 3}, "id": "p3"}))
        .await;
    assert_eq!(
        ack["offset"], 3,
        "offsets continue across a supervisor crash: {ack}"
    );
    let (status, _) = admin_post(&server, "/admin/actors/nobody/crash").await;
    assert_eq!(status, 404);
    assert_eq!(get(&server, "/health/ready").await.0, 200);
}

/// Without `admin.chaos`, the crash route does not exist, even with the
/// right token, and nothing is crashed.
#[actix_rt::test]
async fn the_crash_route_is_404_when_chaos_is_off() {
    let server = start(admin_settings(false)).await;
    let (status, body) = admin_post(&server, "/admin/actors/scheduler/crash").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let a = actor(&server, "scheduler").await;
    assert_eq!(
        (a["restarts"].as_u64(), a["status"].as_str()),
        (Some(0), Some("healthy"))
    );
}

/// `POST /admin/shutdown` answers 202 and takes the SIGTERM path: readiness
/// is 503 at once, the staged shutdown runs every stage and its report says
/// who asked; the exit code is 0.
#[actix_rt::test]
async fn an_admin_shutdown_takes_the_sigterm_path() {
    let mut settings = admin_settings(false);
    // Keep the listener open after the request (as a load balancer would
    // need) so that readiness can be read; with no delay the intake stage
    // may already have closed it.
    settings.shutdown.drain_delay_ms = 2000;
    let server = start(settings).await;
    let addr = server.addr();
    let running = actix_rt::spawn(server.run_until_stopped());
    let res = reqwest::Client::new()
        .post(format!("http://{addr}/admin/shutdown"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let ready = reqwest::get(format!("http://{addr}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reason"], "draining");

    let report = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("shutdown within its bound")
        .unwrap();
    assert_eq!(
        report.reason,
        ShutdownReason::Requested { by: "admin".into() }
    );
    assert_eq!(report.exit_code, 0);
    let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, Stage::ORDER.to_vec());
    assert_eq!(report.actor("scheduler").unwrap().outcome, Outcome::Stopped);
}

/// The room hubs wait `supervision.backoff_*` between consecutive
/// restarts like every other actor (reported as `restart_in_ms` while they
/// restart), not a back-off of their own.
#[actix_rt::test]
async fn room_hubs_restart_with_the_configured_backoff() {
    let mut s = admin_settings(true);
    s.supervision.backoff_min_ms = 1500;
    s.supervision.backoff_max_ms = 1500;
    s.supervision.backoff_jitter = 0.0;
    let server = start(s).await;
    let hub = format!("rooms-{}", server.rooms().shard_of("lobby"));
    let crash = format!("/admin/actors/{hub}/crash");
    // The first restart after a healthy run is at once; the next waits.
    let (status, body) = admin_post(&server, &crash).await;
    assert_eq!(status, 202, "{body}");
    wait_until("the hub is back", Duration::from_secs(10), || async {
        let a = actor(&server, &hub).await;
        a["restarts"] == 1 && a["status"] == "healthy"
    })
    .await;
    let (status, body) = admin_post(&server, &crash).await;
    assert_eq!(status, 202, "{body}");
    let waiting = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until("the hub is restarting", Duration::from_secs(10), || {
        let (server, hub, waiting) = (&server, hub.clone(), waiting.clone());
        async move {
            let (_, _, check) = common::get(server, &format!("/health/{hub}")).await;
            let due = check["details"]["restart_in_ms"].as_u64();
            *waiting.lock().unwrap() = due;
            due.is_some()
        }
    })
    .await;
    let waiting = waiting.lock().unwrap().unwrap();
    assert!(
        (1000..=1500).contains(&waiting),
        "the second restart waits backoff_min_ms (1500), not the default 100: {waiting} ms"
    );
}

/// The console's page is public and static, with or without a token
/// configured: it asks the operator for the token and sends it with each
/// call; the API beside it still answers 401 without one. `/admin/actors`
/// tells the page whether the crash route exists.
#[actix_rt::test]
async fn the_console_page_is_public_and_the_api_still_asks_for_the_token() {
    for settings in [settings(), admin_settings(true)] {
        let server = start(settings).await;
        for path in ["/admin/", "/admin"] {
            let (status, headers, body) = call(&server, reqwest::Method::GET, path, None).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(headers["content-type"], "text/html; charset=utf-8");
            assert!(
                body.as_str().unwrap().contains("/console/console.js"),
                "{body}"
            );
        }
        let (status, _, _) = call(&server, reqwest::Method::GET, "/console/console.js", None).await;
        assert_eq!(status, 200);
    }
    let server = start(admin_settings(true)).await;
    let (status, _, _) = call(&server, reqwest::Method::GET, "/admin/actors", None).await;
    assert_eq!(status, 401);
    assert_eq!(admin_get(&server, "/admin/actors").await["chaos"], true);
}
