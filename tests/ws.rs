//! The WebSocket protocol of PROTOCOL.md through a real client
//! (tokio-tungstenite) against the server in-process on a free port.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast::actors::shutdown::{Outcome, ShutdownReason};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::ws::{connect, try_connect, Client};
use common::{get, settings, wait_until};

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

fn token(secret: &str, sub: &str, exp_in_s: i64, rooms: Option<Vec<&str>>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({"sub": sub, "exp": now + exp_in_s});
    if let Some(r) = rooms {
        claims["rooms"] = json!(r);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Reads `n` `message` frames of `room`, answering their offsets in arrival order.
async fn offsets(c: &mut Client, room: &str, n: usize) -> Vec<u64> {
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        let v = c.recv().await;
        if v["type"] == "message" && v["room"] == room {
            seen.push(v["offset"].as_u64().unwrap());
        }
    }
    seen
}

/// `welcome` carries the session, the user and the configured limits.
#[actix_rt::test]
async fn welcome_carries_session_user_and_limits() {
    let server = start(settings()).await;
    let c = connect(server.addr()).await;
    assert_eq!(c.welcome["heartbeat_ms"], 15000);
    assert_eq!(c.welcome["max_frame_bytes"], 65536);
    assert_eq!(c.session().len(), 32);
    assert!(c.user().starts_with("anon-"));
    let other = connect(server.addr()).await;
    assert_ne!(other.session(), c.session());
}

/// `join` answers the room's latest offset and epoch; `publish` is acked
/// with its offset, and every member, the publisher included, gets the
/// message with `from`; offsets start at 1 and rise by 1.
#[actix_rt::test]
async fn join_publish_ack_and_message_reach_every_member() {
    let server = start(settings()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    let joined = a.join("lobby").await;
    assert_eq!(
        (joined["offset"].as_u64(), joined["id"].as_str()),
        (Some(0), Some("j-lobby"))
    );
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(b.join("lobby").await["epoch"], epoch);

    a.send(
        json!({"type": "publish", "room": "lobby", "data": {"text": "hi", "n": [1, 2]}, "id": 1}),
    )
    .await;
    let mut got = [a.recv().await, a.recv().await];
    got.sort_by_key(|v| v["type"].as_str().unwrap().to_owned());
    assert_eq!(
        got[0],
        json!({"type": "ack", "room": "lobby", "offset": 1, "id": 1})
    );
    let message = json!({"type": "message", "room": "lobby", "offset": 1, "from": a.user(), "data": {"text": "hi", "n": [1, 2]}});
    assert_eq!(got[1], message);
    assert_eq!(b.recv().await, message);

    let ack = a
        .request(json!({"type": "publish", "room": "lobby", "data": 42, "id": "two"}))
        .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "room": "lobby", "offset": 2, "id": "two"})
    );
    assert_eq!(b.recv().await["offset"], 2);
    let mut c = connect(server.addr()).await;
    let joined = c.join("lobby").await;
    assert_eq!(
        (joined["offset"].as_u64(), &joined["epoch"]),
        (Some(2), &json!(epoch))
    );
}

/// `ping` answers `pong` with the id; a request without an id gets a reply without one.
#[actix_rt::test]
async fn ping_pong_echoes_the_id() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    assert_eq!(
        c.request(json!({"type": "ping", "id": 9})).await,
        json!({"type": "pong", "id": 9})
    );
    assert_eq!(
        c.request(json!({"type": "ping", "id": "x"})).await,
        json!({"type": "pong", "id": "x"})
    );
    assert_eq!(
        c.request(json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
}

/// `leave` answers `left`; messages stop; a publish afterwards is `not_member`.
#[actix_rt::test]
async fn leave_stops_messages_and_membership() {
    let server = start(settings()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    a.join("room1").await;
    b.join("room1").await;
    assert_eq!(
        b.request(json!({"type": "leave", "room": "room1", "id": 3}))
            .await,
        json!({"type": "left", "room": "room1", "id": 3})
    );
    a.request(json!({"type": "publish", "room": "room1", "data": 1}))
        .await;
    let err = b
        .request(json!({"type": "publish", "room": "room1", "data": 2, "id": 4}))
        .await;
    assert_eq!(
        (err["code"].as_str(), &err["id"]),
        (Some("not_member"), &json!(4)),
        "{err}"
    );
    // b got nothing from room1 after leaving: its next frame is the pong.
    assert_eq!(
        b.request(json!({"type": "ping", "id": 5})).await["type"],
        "pong"
    );
    let presence = a
        .request(json!({"type": "presence", "room": "room1"}))
        .await;
    assert_eq!(
        presence["members"],
        json!([{"user": a.user(), "sessions": 1}])
    );
}

/// `presence` lists each user once with the number of its sessions.
#[actix_rt::test]
async fn presence_counts_sessions_per_user() {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new("s3cret");
    let server = start(s).await;
    let t1 = token("s3cret", "alice", 600, None);
    let t2 = token("s3cret", "bob", 600, None);
    let mut a1 = try_connect(server.addr(), &format!("?token={t1}"), &[])
        .await
        .unwrap();
    let mut a2 = try_connect(
        server.addr(),
        "",
        &[("authorization", &format!("Bearer {t1}"))],
    )
    .await
    .unwrap();
    let mut b = try_connect(server.addr(), &format!("?token={t2}"), &[])
        .await
        .unwrap();
    assert_eq!(a1.user(), "alice");
    for c in [&mut a1, &mut a2, &mut b] {
        c.join("hall").await;
    }
    let p = b
        .request(json!({"type": "presence", "room": "hall", "id": 1}))
        .await;
    assert_eq!(
        p,
        json!({"type": "presence", "room": "hall", "id": 1,
        "members": [{"user": "alice", "sessions": 2}, {"user": "bob", "sessions": 1}]})
    );
}

/// Malformed frames get `bad_request` and leave the connection open.
#[actix_rt::test]
async fn malformed_frames_get_bad_request() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    for (frame, want_id) in [
        (Message::Text("not json".into()), Value::Null),
        (Message::Text("[1,2]".into()), Value::Null),
        (
            Message::Text("{\"type\":\"dance\",\"id\":1}".into()),
            json!(1),
        ),
        (Message::Text("{\"id\":2}".into()), json!(2)),
        (Message::Text("{\"type\":7,\"id\":3}".into()), json!(3)),
        (
            Message::Text("{\"type\":\"join\",\"id\":4}".into()),
            json!(4),
        ),
        (
            Message::Text("{\"type\":\"join\",\"room\":5,\"id\":5}".into()),
            json!(5),
        ),
        (
            Message::Text("{\"type\":\"ping\",\"id\":{\"x\":1}}".into()),
            Value::Null,
        ),
        (
            Message::Text("{\"type\":\"resume\",\"id\":6}".into()),
            json!(6),
        ),
        (
            Message::Text(
                "{\"type\":\"resume\",\"session\":\"s\",\"rooms\":{\"a\":-1},\"id\":7}".into(),
            ),
            json!(7),
        ),
    ] {
        c.send_raw(frame.clone()).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "error", "{frame:?} -> {reply}");
        assert_eq!(reply["code"], "bad_request", "{frame:?} -> {reply}");
        assert_eq!(
            reply.get("id").cloned().unwrap_or(Value::Null),
            want_id,
            "{frame:?} -> {reply}"
        );
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    c.join("lobby").await;
    let reply = c
        .request(json!({"type": "publish", "room": "lobby", "id": 8}))
        .await;
    assert_eq!(
        reply["code"], "bad_request",
        "publish without data: {reply}"
    );
    assert_eq!(
        c.request(json!({"type": "ping", "id": 9})).await["type"],
        "pong"
    );
}

/// Room names outside the protocol's rules get `invalid_room`.
#[actix_rt::test]
async fn bad_room_names_get_invalid_room() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    for room in ["", "has space", "slash/room", &"r".repeat(129), "é"] {
        let reply = c
            .request(json!({"type": "join", "room": room, "id": 1}))
            .await;
        assert_eq!(reply["code"], "invalid_room", "{room:?}: {reply}");
    }
    assert_eq!(c.join(&"r".repeat(128)).await["type"], "joined");
}

/// Publishing to a `$` system room, or to a room outside the token's `rooms`
/// claim, is `forbidden`; joining outside the claim too.
#[actix_rt::test]
async fn system_rooms_and_token_claims_are_forbidden() {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new("k");
    let server = start(s).await;
    let t = token(
        "k",
        "carol",
        600,
        Some(vec!["team:*", "lobby", "$trending"]),
    );
    let mut c = try_connect(server.addr(), &format!("?token={t}"), &[])
        .await
        .unwrap();
    c.join("$trending").await;
    let err = c
        .request(json!({"type": "publish", "room": "$trending", "data": 1, "id": 1}))
        .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    let err = c
        .request(json!({"type": "join", "room": "secret", "id": 2}))
        .await;
    assert_eq!(err["code"], "forbidden", "{err}");
    c.join("team:red").await;
    let ack = c
        .request(json!({"type": "publish", "room": "team:red", "data": 1, "id": 3}))
        .await;
    assert_eq!(ack["type"], "ack");
}

/// Five publishers × 200 messages to twenty subscribers: every subscriber
/// sees offsets 1..=1000 once each, in order; acks are unique.
#[actix_rt::test]
async fn concurrent_publishers_give_one_order_everywhere() {
    let mut s = settings();
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    s.server.workers = 2;
    let server = start(s).await;
    let addr = server.addr();
    let mut subscribers = Vec::new();
    for _ in 0..20 {
        let mut c = connect(addr).await;
        c.join("order").await;
        subscribers.push(c);
    }
    let mut publishers = Vec::new();
    for p in 0..5 {
        publishers.push(actix_rt::spawn(async move {
            let mut c = connect(addr).await;
            c.join("order").await;
            let mut acks = Vec::new();
            for i in 0..200 {
                c.send(
                    json!({"type": "publish", "room": "order", "data": {"p": p, "i": i}, "id": i}),
                )
                .await;
            }
            while acks.len() < 200 {
                let v = c.recv().await;
                if v["type"] == "ack" {
                    acks.push(v["offset"].as_u64().unwrap());
                }
            }
            acks
        }));
    }
    let mut all_acks = Vec::new();
    for p in publishers {
        all_acks.extend(p.await.unwrap());
    }
    all_acks.sort_unstable();
    assert_eq!(
        all_acks,
        (1..=1000).collect::<Vec<_>>(),
        "every publish got a unique offset"
    );
    for c in &mut subscribers {
        assert_eq!(
            offsets(c, "order", 1000).await,
            (1..=1000).collect::<Vec<_>>()
        );
    }
}

/// `resume` after a reconnect replays what was missed, in order, then
/// `resumed` with `complete: true`, and adopts the old session id.
#[actix_rt::test]
async fn resume_replays_missed_messages() {
    let server = start(settings()).await;
    let mut a = connect(server.addr()).await;
    let mut p = connect(server.addr()).await;
    let epoch = a.join("news").await["epoch"].clone();
    p.join("news").await;
    for i in 1..=3 {
        p.request(json!({"type": "publish", "room": "news", "data": i}))
            .await;
    }
    assert_eq!(offsets(&mut a, "news", 3).await, vec![1, 2, 3]);
    let old = a.session();
    a.ws.close(None).await.unwrap();
    drop(a);
    for i in 4..=6 {
        p.request(json!({"type": "publish", "room": "news", "data": i}))
            .await;
    }
    let mut a = connect(server.addr()).await;
    a.send(json!({"type": "resume", "session": old, "rooms": {"news": 3}, "epochs": {"news": epoch}, "id": 1})).await;
    for want in 4..=6 {
        let m = a.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["offset"].as_u64(), m["data"].as_u64()),
            (Some("message"), Some(want), Some(want)),
            "{m}"
        );
    }
    let resumed = a.recv().await;
    assert_eq!(
        resumed,
        json!({"type": "resumed", "session": old, "id": 1,
        "rooms": {"news": {"replayed": 3, "complete": true, "epoch": epoch}}})
    );
    // Live messages follow, and the resumed session is a member again.
    p.request(json!({"type": "publish", "room": "news", "data": 7}))
        .await;
    assert_eq!(offsets(&mut a, "news", 1).await, vec![7]);
}

/// When history no longer reaches back to the client's offset, `resume`
/// replays what it has and answers `complete: false`.
#[actix_rt::test]
async fn resume_past_history_is_incomplete() {
    let mut s = settings();
    s.rooms.history_size = 5;
    let server = start(s).await;
    let mut p = connect(server.addr()).await;
    p.join("feed").await;
    for i in 1..=12 {
        p.request(json!({"type": "publish", "room": "feed", "data": i}))
            .await;
    }
    let mut a = connect(server.addr()).await;
    let session = a.session();
    a.send(json!({"type": "resume", "session": session, "rooms": {"feed": 2}, "id": "r"}))
        .await;
    assert_eq!(offsets(&mut a, "feed", 5).await, vec![8, 9, 10, 11, 12]);
    let resumed = a.recv().await;
    assert_eq!(resumed["rooms"]["feed"]["replayed"], 5);
    assert_eq!(resumed["rooms"]["feed"]["complete"], false);
}

/// A `resume` naming another epoch replays nothing and answers `complete: false`.
#[actix_rt::test]
async fn resume_with_a_changed_epoch_replays_nothing() {
    let server = start(settings()).await;
    let mut p = connect(server.addr()).await;
    let epoch = p.join("feed").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        p.request(json!({"type": "publish", "room": "feed", "data": i}))
            .await;
    }
    let mut a = connect(server.addr()).await;
    let session = a.session();
    let resumed = a
        .request(json!({"type": "resume", "session": session, "rooms": {"feed": 1}, "epochs": {"feed": "0000000000000bad"}, "id": 1}))
        .await;
    assert_eq!(
        resumed["rooms"]["feed"],
        json!({"replayed": 0, "complete": false, "epoch": epoch})
    );
    // Still joined: live messages arrive.
    p.request(json!({"type": "publish", "room": "feed", "data": 4}))
        .await;
    assert_eq!(offsets(&mut a, "feed", 1).await, vec![4]);
}

/// A bad or expired token is refused with 401 before the upgrade; a token
/// that expires mid-session closes the socket with 1008.
#[actix_rt::test]
async fn tokens_are_checked_before_the_upgrade_and_on_expiry() {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new("right");
    let server = start(s).await;
    let addr = server.addr();
    assert_eq!(
        try_connect(addr, "", &[]).await.err(),
        Some(401),
        "no token"
    );
    assert_eq!(
        try_connect(addr, "?token=garbage", &[]).await.err(),
        Some(401),
        "malformed"
    );
    let wrong = token("wrong", "u", 600, None);
    assert_eq!(
        try_connect(addr, &format!("?token={wrong}"), &[])
            .await
            .err(),
        Some(401),
        "wrong key"
    );
    let expired = token("right", "u", -10, None);
    assert_eq!(
        try_connect(addr, &format!("?token={expired}"), &[])
            .await
            .err(),
        Some(401),
        "expired"
    );
    let short = token("right", "dave", 2, None);
    let mut c = try_connect(addr, &format!("?token={short}"), &[])
        .await
        .expect("a valid token connects");
    assert_eq!(c.user(), "dave");
    assert_eq!(c.close_code().await, 1008);
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/ws"))
        .header("Authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert!(
        !body.to_string().contains("nope"),
        "the token is not echoed: {body}"
    );
}

/// A hub panicking in the middle of a stream of publishes: every client
/// stays connected, membership is intact, offsets continue without a gap or
/// a reset, every acked message is delivered, and a publish that arrives
/// while the hub restarts gets `unavailable`.
#[actix_rt::test]
async fn a_hub_crash_mid_stream_loses_nothing_that_was_acked() {
    let mut s = settings();
    s.rooms.shards = 1;
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    s.supervision.backoff_min_ms = 1500; // the second crash in a row waits this long
    let server = start(s).await;
    let addr = server.addr();
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = connect(addr).await;
        c.join("stream").await;
        subs.push(c);
    }
    let mut p = connect(addr).await;
    let epoch = p.join("stream").await["epoch"].clone();
    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut i = 0;
    let (mut first_crash, mut second_crash) = (false, false);
    while acked.len() < 200 {
        if acked.len() == 100 && !first_crash {
            first_crash = true;
            server.rooms().crash(0);
        }
        if acked.len() == 150 && !second_crash {
            second_crash = true;
            // Two crashes in a row: the restart now waits for the back-off.
            server.rooms().crash(0);
            wait_until("the restart", Duration::from_secs(5), || async {
                get(&server, "/health/rooms-0").await.2["restarts"].as_u64() >= Some(2)
            })
            .await;
            server.rooms().crash(0);
            wait_until("the hub to go down", Duration::from_secs(5), || async {
                get(&server, "/health/rooms-0").await.2["status"] == "unhealthy"
            })
            .await;
            let reply = p
                .request(json!({"type": "publish", "room": "stream", "data": "during", "id": "x"}))
                .await;
            assert_eq!(
                (reply["code"].as_str(), &reply["id"]),
                (Some("unavailable"), &json!("x")),
                "{reply}"
            );
        }
        i += 1;
        let reply = p
            .request(json!({"type": "publish", "room": "stream", "data": acked.len(), "id": i}))
            .await;
        match reply["type"].as_str() {
            Some("ack") => acked.push(reply["offset"].as_u64().unwrap()),
            Some("error") if reply["code"] == "unavailable" => {
                // What a real client does with `unavailable`: retry once the room service is back.
                unavailable += 1;
                wait_until("the hub answers again", Duration::from_secs(5), || async {
                    server.rooms().presence("stream").await.is_ok()
                })
                .await;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!(
        unavailable >= 1,
        "the restart window answered `unavailable`"
    );
    assert_eq!(
        acked,
        (1..=200).collect::<Vec<_>>(),
        "offsets continue without a gap or a reset"
    );
    for c in &mut subs {
        assert_eq!(
            offsets(c, "stream", 200).await,
            (1..=200).collect::<Vec<_>>()
        );
        assert_eq!(
            c.request(json!({"type": "ping", "id": 1})).await["type"],
            "pong",
            "still connected"
        );
    }
    let presence = p
        .request(json!({"type": "presence", "room": "stream"}))
        .await;
    assert_eq!(
        presence["members"].as_array().unwrap().len(),
        4,
        "membership intact: {presence}"
    );
    let mut late = connect(addr).await;
    assert_eq!(
        late.join("stream").await["epoch"],
        epoch,
        "same epoch after the crashes"
    );
    let (_, _, hub) = get(&server, "/health/rooms-0").await;
    assert_eq!(hub["restarts"], 3);
    assert!(hub["last_failure"]["reason"]
        .as_str()
        .unwrap()
        .contains("crash requested"));
}

/// A shutdown sends every client `draining` with a `reconnect_after_ms`
/// inside the configured spread, then closes with 1001; the process exit
/// code is 0 and the `connections` stage is in the report.
#[actix_rt::test]
async fn shutdown_drains_clients_with_draining_then_1001() {
    let mut s = settings();
    s.ws.drain_spread_ms = 3000;
    let server = start(s).await;
    let addr = server.addr();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut c = connect(addr).await;
        c.join("bye").await;
        clients.push(c);
    }
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let running = actix_rt::spawn(server.run_until_stopped());
    let mut spreads = HashMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let d = c.recv().await;
        assert_eq!(d["type"], "draining", "{d}");
        let after = d["reconnect_after_ms"].as_u64().unwrap();
        assert!(after < 3000, "{after}");
        spreads.insert(i, after);
        assert_eq!(c.close_code().await, 1001);
    }
    let report = running.await.unwrap();
    assert_eq!(report.exit_code, 0);
    let conns = report.actor("connections").unwrap();
    assert_eq!(conns.outcome, Outcome::Stopped);
    assert!(
        spreads
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "spread: {spreads:?}"
    );
}

/// A `leave` sent right behind its `join`, before `joined` came back, still
/// leaves: the late join does not put the client back, so it gets no
/// message of the room and presence does not list it.
#[actix_rt::test]
async fn a_leave_sent_before_its_joined_arrived_still_leaves() {
    use futures_util::SinkExt;
    let server = start(settings()).await;
    let mut a = connect(server.addr()).await;
    // One write: the server reads both frames before anything answers the join.
    for frame in [
        json!({"type": "join", "room": "lbj", "id": 1}),
        json!({"type": "leave", "room": "lbj", "id": 2}),
    ] {
        a.ws.feed(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
    a.ws.flush().await.unwrap();
    let mut replies = [a.recv_reply().await, a.recv_reply().await];
    replies.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(
        (&replies[0]["type"], &replies[0]["id"]),
        (&json!("joined"), &json!(1)),
        "{replies:?}"
    );
    assert_eq!(replies[1], json!({"type": "left", "room": "lbj", "id": 2}));

    let mut b = connect(server.addr()).await;
    b.join("lbj").await;
    let presence = b
        .request(json!({"type": "presence", "room": "lbj", "id": 3}))
        .await;
    assert_eq!(
        presence["members"],
        json!([{"user": b.user(), "sessions": 1}]),
        "{presence}"
    );
    let ack = b
        .request(json!({"type": "publish", "room": "lbj", "data": "x", "id": 4}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // The message was handed to every member's worker before the ack; a's
    // next frame is the pong, not the message.
    a.send(json!({"type": "ping", "id": 5})).await;
    assert_eq!(a.recv().await, json!({"type": "pong", "id": 5}));
}

/// `data: null` is published like any other value (PROTOCOL.md, the
/// correction in "Additions to v1"): acknowledged, delivered to every member
/// with `"data": null`, and replayed by `resume`; only a missing `data` is
/// `bad_request`.
#[actix_rt::test]
async fn a_publish_of_null_data_round_trips() {
    let server = start(settings()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    a.join("nulls").await;
    b.join("nulls").await;
    let ack = a
        .request(json!({"type": "publish", "room": "nulls", "data": null, "id": 1}))
        .await;
    assert_eq!(
        ack,
        json!({"type": "ack", "room": "nulls", "offset": 1, "id": 1})
    );
    let want =
        json!({"type": "message", "room": "nulls", "offset": 1, "from": a.user(), "data": null});
    assert_eq!(b.recv().await, want);

    let mut c = connect(server.addr()).await;
    c.send(json!({"type": "resume", "session": b.session(), "rooms": {"nulls": 0}, "id": 2}))
        .await;
    assert_eq!(c.recv().await, want);
    assert_eq!(c.recv().await["type"], "resumed");

    let err = a
        .request(json!({"type": "publish", "room": "nulls", "id": 3}))
        .await;
    assert_eq!(
        (err["code"].as_str(), err["message"].as_str()),
        (Some("bad_request"), Some("missing field `data`")),
        "{err}"
    );
}

/// Issue 12, finding 1: a client resumes a session whose old socket is
/// still open (a phone reconnecting before the server noticed its old TCP
/// connection died); then the old socket closes. The new socket keeps the
/// room's messages and presence, and a shutdown still drains it with
/// `draining` and 1001: the old socket's end releases only what it held.
#[actix_rt::test]
async fn resuming_a_session_whose_old_socket_is_open_survives_the_old_close() {
    let server = start(settings()).await;
    let addr = server.addr();
    let mut old = connect(addr).await;
    let joined = old.join("dbl").await;
    let session = old.session();
    let mut new = connect(addr).await;
    let resumed = new
        .request(
            json!({"type": "resume", "session": session, "rooms": {"dbl": 0},
            "epochs": {"dbl": joined["epoch"]}, "id": 1}),
        )
        .await;
    assert_eq!(resumed["session"], session, "{resumed}");
    old.ws.close(None).await.unwrap();
    old.close_code().await;

    let mut publisher = connect(addr).await;
    publisher.join("dbl").await;
    // The old socket's end has been handled once the server counts two
    // connections (the new one and the publisher).
    let probe = server.probe();
    wait_until(
        "the old socket's end is handled",
        Duration::from_secs(5),
        || {
            let n = probe.connections();
            async move { n == 2 }
        },
    )
    .await;
    let ack = publisher
        .request(json!({"type": "publish", "room": "dbl", "data": "after", "id": 2}))
        .await;
    let got = offsets(&mut new, "dbl", 1).await;
    assert_eq!(got, [ack["offset"].as_u64().unwrap()]);
    let presence = new
        .request(json!({"type": "presence", "room": "dbl", "id": 3}))
        .await;
    assert_eq!(
        presence["members"].as_array().unwrap().len(),
        2,
        "{presence}"
    );

    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let running = actix_rt::spawn(server.run_until_stopped());
    let d = new.recv_reply().await;
    assert_eq!(d["type"], "draining", "{d}");
    assert_eq!(new.close_code().await, 1001);
    assert_eq!(running.await.unwrap().exit_code, 0);
}

/// A token whose `nbf` (not before) lies ahead is refused with 401 until
/// then; one whose `nbf` has passed connects (issue 12 #7).
#[actix_rt::test]
async fn a_token_is_refused_before_its_nbf() {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new("right");
    let server = start(s).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let early = common::ws::token("right", "u", json!({"nbf": now + 3 * 365 * 24 * 3600}));
    let res = reqwest::Client::new()
        .get(format!("http://{}/ws", server.addr()))
        .header("Authorization", format!("Bearer {early}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert!(
        body.to_string().contains("not valid yet"),
        "the error says why: {body}"
    );
    let due = common::ws::token("right", "u", json!({"nbf": now - 10}));
    let c = try_connect(server.addr(), &format!("?token={due}"), &[])
        .await
        .expect("a token past its nbf connects");
    assert_eq!(c.user(), "u");
}

/// Issue 12, finding 1, the rest: the old socket's end does not mark the
/// session detached while the new socket holds it, so the session outlives
/// its TTL as long as the new socket is open (a third client resumes it).
#[actix_rt::test]
async fn the_old_sockets_end_does_not_start_the_ttl_of_a_session_held_elsewhere() {
    let ttl = Duration::from_millis(400);
    let mut s = settings();
    s.session.ttl_ms = ttl.as_millis() as u64;
    let server = start(s).await;
    let addr = server.addr();
    let mut old = connect(addr).await;
    let joined = old.join("held").await;
    let session = old.session();
    let resume = json!({"type": "resume", "session": session, "rooms": {"held": 0},
        "epochs": {"held": joined["epoch"]}, "id": 1});
    let mut new = connect(addr).await;
    assert_eq!(new.request(resume.clone()).await["session"], session);
    old.ws.close(None).await.unwrap();
    old.close_code().await;
    let probe = server.probe();
    wait_until(
        "the old socket's end is handled",
        Duration::from_secs(5),
        || {
            let n = probe.connections();
            async move { n == 1 }
        },
    )
    .await;
    // Longer than the TTL, with the session attached to `new` all along
    // (the time passing is what is tested).
    tokio::time::sleep(ttl * 3).await;
    let mut again = connect(addr).await;
    let resumed = again.request(resume).await;
    assert_eq!(
        resumed["session"], session,
        "the session lived while attached, so it resumes: {resumed}"
    );
    drop(new);
}

/// Issue 12 #13: the scheme `bearer` is case-insensitive on `/ws` as on
/// the admin API; a refused token's 401 says what is wrong in Holdfast's
/// words, not the JWT library's; a handshake with another WebSocket version
/// or a key that is not 16 bytes of base64 is a 400 with a JSON body.
#[actix_rt::test]
async fn tokens_and_handshakes_are_checked_the_way_clients_expect() {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new("right");
    let server = start(s).await;
    let addr = server.addr();
    let good = token("right", "u", 600, None);
    let c = try_connect(addr, "", &[("authorization", &format!("bearer {good}"))])
        .await
        .expect("lower-case bearer connects");
    assert_eq!(c.user(), "u");

    // {"alg":"none"} with a made-up signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.x";
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/ws"))
        .bearer_auth(none)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body = res.text().await.unwrap();
    assert!(!body.contains("variant"), "no library internals: {body}");
    assert!(body.contains("invalid token"), "{body}");

    let upgrade = |version: &'static str, key: &'static str| {
        let good = good.clone();
        async move {
            let res = reqwest::Client::new()
                .get(format!("http://{addr}/ws"))
                .bearer_auth(good)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", version)
                .header("sec-websocket-key", key)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    for (version, key) in [
        ("8", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("13", ""),
        ("13", "not base64 at all!"),
        ("13", "c2hvcnQ="),
    ] {
        let (status, body) = upgrade(version, key).await;
        assert_eq!(status, 400, "version {version}, key {key:?}: {body}");
        assert!(body["message"].is_string(), "a JSON body: {body}");
    }
}

/// With `auth.public_key_file` (an issuer's RSA key), an RS256 token signed
/// by the issuer connects, with the audience and issuer configured; an
/// HS256 token, one for another audience, and one from another issuer get
/// 401.
#[actix_rt::test]
async fn an_issuers_rs256_tokens_are_verified_with_its_public_key() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
    let mut s = settings();
    s.auth.public_key_file = format!("{KEYS}/rsa_public.pem");
    s.auth.audience = "holdfast".into();
    s.auth.issuer = "https://idp.example".into();
    let server = start(s).await;
    let addr = server.addr();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let private = std::fs::read(format!("{KEYS}/rsa_private.pem")).unwrap();
    let rs256 = |claims: Value| {
        let key = EncodingKey::from_rsa_pem(&private).unwrap();
        encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    };
    let good = rs256(
        json!({"sub": "ann", "exp": exp, "aud": "holdfast", "iss": "https://idp.example", "team": "blue"}),
    );
    let c = try_connect(addr, &format!("?token={good}"), &[])
        .await
        .expect("the issuer's token connects");
    assert_eq!(c.user(), "ann");
    for (what, t) in [
        (
            "another audience",
            rs256(json!({"sub": "a", "exp": exp, "aud": "other", "iss": "https://idp.example"})),
        ),
        (
            "another issuer",
            rs256(
                json!({"sub": "a", "exp": exp, "aud": "holdfast", "iss": "https://evil.example"}),
            ),
        ),
        ("HS256", token("anything", "a", 600, None)),
    ] {
        assert_eq!(
            try_connect(addr, &format!("?token={t}"), &[]).await.err(),
            Some(401),
            "{what}"
        );
    }
}

/// What the session store holds is bounded by the TTL: sessions whose
/// sockets closed leave the store (and `/health/sessions`) within a
/// quarter of the TTL after it ends (the sweep ran every 60 s whatever the
/// TTL, so 10,000 fuzzing connections with a 1 s TTL left 11,530 sessions
/// held 3 s after the run).
#[actix_rt::test]
async fn closed_sessions_leave_the_store_within_a_quarter_ttl_after_it() {
    let mut s = settings();
    s.session.ttl_ms = 1000;
    let server = start(s).await;
    for _ in 0..20 {
        let mut c = connect(server.addr()).await;
        c.ws.close(None).await.unwrap();
        c.close_code().await;
    }
    let held = || async {
        common::get(&server, "/health/sessions").await.2["details"]["sessions"]
            .as_u64()
            .unwrap()
    };
    assert!(held().await >= 1, "closed sessions are held for the TTL");
    wait_until(
        "the store holds no expired session",
        Duration::from_secs(5),
        || async { held().await == 0 },
    )
    .await;
}

/// `session.max_detached` bounds what a flood of connections can make the
/// store hold for the TTL: past it, the detached session that would expire
/// first is forgotten (counted), the newer ones still resume, and an
/// attached session is never forgotten.
#[actix_rt::test]
async fn past_max_detached_the_oldest_detached_session_is_forgotten() {
    let mut s = settings();
    s.session.max_detached = 3;
    let server = start(s).await;
    let addr = server.addr();
    let held = connect(addr).await; // attached throughout
    let mut closed = Vec::new();
    for _ in 0..5 {
        let mut c = connect(addr).await;
        closed.push(c.session());
        c.ws.close(None).await.unwrap();
        c.close_code().await;
        // Detached in this order (the socket's end is handled before the next).
        let n = closed.len();
        wait_until("the close handled", Duration::from_secs(5), || async {
            let d = common::get(&server, "/health/sessions").await.2["details"].clone();
            d["detached"].as_u64().unwrap() + d["evicted"].as_u64().unwrap() == n as u64
        })
        .await;
    }
    let details = common::get(&server, "/health/sessions").await.2["details"].clone();
    assert_eq!(
        (details["detached"].as_u64(), details["evicted"].as_u64()),
        (Some(3), Some(2)),
        "{details}"
    );
    assert_eq!(
        common::metric(&server, "holdfast_sessions_evicted_total").await,
        2.0
    );
    let mut open = Vec::new(); // kept open: attached, so they evict nothing
    for (i, session) in closed.iter().enumerate() {
        let mut c = connect(addr).await;
        let resumed = c
            .request(
                json!({"type": "resume", "session": session, "rooms": {}, "epochs": {}, "id": i}),
            )
            .await;
        if i < 2 {
            assert_ne!(resumed["session"], session.as_str(), "forgotten: {resumed}");
        } else {
            assert_eq!(
                resumed["session"],
                session.as_str(),
                "still held: {resumed}"
            );
        }
        open.push(c);
    }
    let mut again = connect(addr).await;
    let resumed = again
        .request(json!({"type": "resume", "session": held.session(), "rooms": {}, "epochs": {}, "id": "held"}))
        .await;
    assert_eq!(resumed["session"], held.session().as_str(), "{resumed}");
}
