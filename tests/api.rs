//! The server API for backends (PROTOCOL.md, "Server API") through real
//! HTTP requests, with real WebSocket clients seeing what it publishes.

mod common;

use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};

use common::settings;
use common::ws::connect;

const KEY: &str = "api-key-0123456789abcdef";

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

fn with_key() -> Settings {
    let mut s = settings();
    s.api.key = serde_json::from_value(json!(KEY)).unwrap();
    s
}

async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", server.addr()));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    call(server, reqwest::Method::POST, path, Some(KEY), Some(body)).await
}

/// Without `api.key` every route is a JSON 404; with it, a missing or
/// wrong key is a JSON 401 that does not echo the key.
#[actix_rt::test]
async fn the_api_is_off_without_a_key_and_refuses_a_wrong_one() {
    let off = start(settings()).await;
    let (status, body) = call(
        &off,
        reqwest::Method::POST,
        "/api/v1/publish",
        Some(KEY),
        Some(json!({"room": "r", "data": 1})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("not_found")),
        "{body}"
    );

    let on = start(with_key()).await;
    let body = Some(json!({"room": "r", "data": 1}));
    let (status, missing) = call(
        &on,
        reqwest::Method::POST,
        "/api/v1/publish",
        None,
        body.clone(),
    )
    .await;
    assert_eq!(
        (status, missing["code"].clone()),
        (401, json!("unauthorized")),
        "{missing}"
    );
    let (status, wrong) = call(
        &on,
        reqwest::Method::POST,
        "/api/v1/publish",
        Some("not-the-key-at-all"),
        body,
    )
    .await;
    assert_eq!(status, 401, "{wrong}");
    assert!(!wrong.to_string().contains("not-the-key"), "{wrong}");
    let (status, _) = call(
        &on,
        reqwest::Method::GET,
        "/api/v1/rooms/r/presence",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
}

/// A publish through the API reaches the room's members as a `message`
/// from `server` (or the given `from`), on the room's offset sequence
/// shared with clients; a broadcast answers per room, errors included.
#[actix_rt::test]
async fn publish_and_broadcast_reach_clients_on_the_shared_offsets() {
    let server = start(with_key()).await;
    let mut c = connect(server.addr()).await;
    let joined = c.join("news").await;
    let ack = c
        .request(json!({"type": "publish", "room": "news", "data": "from a client", "id": 1}))
        .await;
    assert_eq!(ack["offset"], 1);
    let (status, body) = post(
        &server,
        "/api/v1/publish",
        json!({"room": "news", "data": {"headline": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"room": "news", "offset": 2, "epoch": joined["epoch"]})
    );
    let mut got = c.recv().await;
    while got["offset"] != 2 {
        got = c.recv().await;
    }
    assert_eq!(
        (got["from"].clone(), got["data"].clone()),
        (json!("server"), json!({"headline": "hi"}))
    );

    let (status, body) = post(
        &server,
        "/api/v1/broadcast",
        json!({"rooms": ["news", "bad room", "$alerts"], "data": null, "from": "ops"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 3, "{body}");
    assert_eq!(results[1]["room"], "bad room");
    assert_eq!(results[1]["error"]["code"], "bad_request", "{body}");
    assert_eq!(
        results[2]["offset"], 1,
        "system rooms are the server's to publish: {body}"
    );
    let m = c.recv().await;
    assert_eq!(
        (m["offset"].clone(), m["from"].clone(), m["data"].clone()),
        (json!(3), json!("ops"), Value::Null)
    );
}

/// Presence and history of a room; bad input is a JSON 400 naming the
/// problem, and nothing is published.
#[actix_rt::test]
async fn presence_history_and_bad_input() {
    let mut s = with_key();
    s.ws.max_data_bytes = 64;
    let server = start(s).await;
    let mut c = connect(server.addr()).await;
    c.join("room-1").await;
    for i in 1..=3 {
        post(
            &server,
            "/api/v1/publish",
            json!({"room": "room-1", "data": i}),
        )
        .await;
    }
    let (status, presence) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms/room-1/presence",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        presence,
        json!({"room": "room-1", "members": [{"user": c.user(), "sessions": 1}]})
    );
    let (status, history) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms/room-1/history?since=1&limit=1",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["messages"],
        json!([{"offset": 2, "from": "server", "data": 2}])
    );
    assert_eq!(history["complete"], true);
    assert!(
        history.get("type").is_none() && history.get("id").is_none(),
        "{history}"
    );

    for (body, says) in [
        (json!({"room": "room-1"}), "data"),
        (json!({"room": "a/b", "data": 1}), "room name"),
        (
            json!({"room": "room-1", "data": "x".repeat(100)}),
            "64 bytes",
        ),
        (json!({"room": "room-1", "data": 1, "extra": 1}), "extra"),
    ] {
        let (status, err) = post(&server, "/api/v1/publish", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["code"], "bad_request", "{err}");
        assert!(
            err["message"].as_str().unwrap().contains(says),
            "{body} -> {err}"
        );
    }
    let (status, err) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms/room-1/history?since=-4",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, err["code"].clone()),
        (400, json!("bad_request")),
        "{err}"
    );
    let (_, history) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms/room-1/history",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        3,
        "nothing else was published"
    );
}

/// `disconnect` closes every connection of the user with the given
/// application code and reason, and nobody else's; without `forget` the
/// session can be resumed, with it the session is gone; a code outside
/// 4000–4999 is a 400.
#[actix_rt::test]
async fn disconnect_closes_the_users_connections_with_an_application_code() {
    let server = start(with_key()).await;
    let mut target = connect(server.addr()).await;
    let mut bystander = connect(server.addr()).await;
    let path = format!("/api/v1/users/{}/disconnect", target.user());
    let (status, err) = post(&server, &path, json!({"code": 1000})).await;
    assert_eq!(
        (status, err["code"].clone()),
        (400, json!("bad_request")),
        "{err}"
    );
    let (status, body) = post(&server, &path, json!({"code": 4001, "reason": "moved"})).await;
    assert_eq!(
        (status, body),
        (200, json!({"disconnected": 1, "cluster": false}))
    );
    assert_eq!(target.close_code().await, 4001);
    assert_eq!(
        bystander.request(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );

    // Not forgotten: the session resumes.
    let old = target.session();
    let mut back = connect(server.addr()).await;
    let resumed = back
        .request(json!({"type": "resume", "session": old, "rooms": {}, "id": 2}))
        .await;
    assert_eq!(resumed["session"], old, "{resumed}");
    // Forgotten: it does not (the resumed connection is the same user's).
    let path = format!("/api/v1/users/{}/disconnect", target.user());
    let (_, body) = post(&server, &path, json!({"code": 4500, "forget": true})).await;
    assert_eq!(body, json!({"disconnected": 1, "cluster": false}));
    assert_eq!(back.close_code().await, 4500);
    let mut again = connect(server.addr()).await;
    let resumed = again
        .request(json!({"type": "resume", "session": old, "rooms": {}, "id": 3}))
        .await;
    assert_ne!(resumed["session"], old, "{resumed}");
}

/// `GET /api/v1/rooms` lists this node's rooms under a prefix, by name,
/// with their member sessions, latest offset and epoch.
#[actix_rt::test]
async fn rooms_are_listed_by_prefix() {
    let server = start(with_key()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    let team = a.join("team:b").await;
    b.join("team:b").await;
    a.join("team:a").await;
    a.join("other").await;
    post(
        &server,
        "/api/v1/publish",
        json!({"room": "team:b", "data": 1}),
    )
    .await;
    let (status, body) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms?prefix=team:",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cluster"], false, "one node without Redis: {body}");
    let rooms = body["rooms"].as_array().unwrap();
    let names: Vec<&str> = rooms.iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert_eq!(names, ["team:a", "team:b"], "{body}");
    assert_eq!(
        rooms[1],
        json!({"room": "team:b", "members": 2, "offset": 1, "epoch": team["epoch"]})
    );
    let (_, all) = call(
        &server,
        reqwest::Method::GET,
        "/api/v1/rooms",
        Some(KEY),
        None,
    )
    .await;
    assert!(all["rooms"].as_array().unwrap().len() >= 3, "{all}");
}
