//! Presence events (PROTOCOL.md, "Presence events") through real clients:
//! `presence_diff` on a user's first join and last leave, batched, only in
//! namespaces with `presence_events`; and across two nodes sharing Redis.

mod common;

use holdfast::server::config::NamespaceSettings;
use holdfast::server::{Builder, Server, Settings};
use serde_json::json;

use common::services::{redis, redis_prefix, REDIS_ADDR};
use common::settings;
use common::ws::{connect_as, Client};

const SECRET: &str = "presence-test-secret-0123456789abcdef";

fn presence_settings(batch_ms: u64) -> Settings {
    let mut s = settings();
    s.auth.jwt_secret = holdfast::server::config::Secret::new(SECRET);
    s.rooms.presence_batch_ms = batch_ms;
    s.rooms.namespaces = vec![NamespaceSettings::new("chat:").presence_events()];
    s
}

async fn start(s: Settings) -> Server {
    Builder::new(s).start().await.expect("server starts")
}

async fn user(server: &Server, sub: &str) -> Client {
    connect_as(server.addr(), SECRET, sub, json!({})).await
}

/// The next `presence_diff` of `room`, as `(joins, leaves)` user lists
/// (with the sessions counts checked: a join's at least 1, a leave's 0).
async fn diff(c: &mut Client, room: &str) -> (Vec<String>, Vec<String>) {
    loop {
        let v = c.recv().await;
        if v["type"] != "presence_diff" {
            continue;
        }
        assert_eq!(v["room"], room, "{v}");
        assert!(
            v.get("offset").is_none(),
            "presence events carry no offset: {v}"
        );
        let users = |key: &str, sessions: fn(u64) -> bool| -> Vec<String> {
            v[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} in {v}"))
                .iter()
                .map(|e| {
                    assert!(sessions(e["sessions"].as_u64().unwrap()), "{v}");
                    e["user"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        return (users("joins", |n| n >= 1), users("leaves", |n| n == 0));
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// First session in: a join; second session of the same user: nothing;
/// first of two sessions out: nothing; last out: a leave. Every member is
/// told, the user who joined included.
#[actix_rt::test]
async fn members_are_told_of_first_joins_and_last_leaves() {
    let server = start(presence_settings(20)).await;
    let room = "chat:1";
    let mut ann = user(&server, "ann").await;
    ann.join(room).await;
    assert_eq!(diff(&mut ann, room).await, (names(&["ann"]), vec![]));

    let mut bob = user(&server, "bob").await;
    bob.join(room).await;
    assert_eq!(diff(&mut ann, room).await, (names(&["bob"]), vec![]));
    assert_eq!(diff(&mut bob, room).await, (names(&["bob"]), vec![]));

    // Bob's second session, then his first one leaving: no diff. Carol's
    // join is the next thing Ann hears of.
    let mut bob2 = user(&server, "bob").await;
    bob2.join(room).await;
    bob.request(json!({"type": "leave", "room": room, "id": "l"}))
        .await;
    let mut carol = user(&server, "carol").await;
    carol.join(room).await;
    assert_eq!(diff(&mut ann, room).await, (names(&["carol"]), vec![]));

    // Bob's last session goes (its connection ends): a leave.
    drop(bob2);
    assert_eq!(diff(&mut ann, room).await, (vec![], names(&["bob"])));
}

/// Joins inside one batch interval come as one diff; rooms outside a
/// namespace with `presence_events` get none.
#[actix_rt::test]
async fn joins_are_batched_and_only_where_asked_for() {
    let server = start(presence_settings(2000)).await;
    let mut ann = user(&server, "ann").await;
    ann.join("chat:2").await;
    ann.join("lobby").await;
    assert_eq!(diff(&mut ann, "chat:2").await, (names(&["ann"]), vec![]));
    let (mut dan, mut eve) = (user(&server, "dan").await, user(&server, "eve").await);
    for c in [&mut dan, &mut eve] {
        c.send(json!({"type": "join", "room": "chat:2", "id": "j"}))
            .await;
    }
    let (mut joins, leaves) = diff(&mut ann, "chat:2").await;
    joins.sort();
    assert_eq!((joins, leaves), (names(&["dan", "eve"]), vec![]));

    let mut zed = user(&server, "zed").await;
    zed.join("lobby").await;
    drop(zed);
    // Past two batches, ann has heard nothing of lobby.
    let mut eve2 = user(&server, "eve").await;
    eve2.join("chat:2").await;
    drop(eve2);
    ann.send(json!({"type": "ping", "id": "p"})).await;
    loop {
        let v = ann.recv().await;
        assert_ne!(v["room"], "lobby", "no presence_diff for lobby: {v}");
        if v["type"] == "pong" {
            break;
        }
    }
}

/// Two nodes on one Redis: a member on node A hears of a join and a leave
/// on node B; a user with a session on A joining on B is no join.
#[actix_rt::test]
async fn presence_events_span_nodes() {
    if redis("presence_events_span_nodes").await.is_none() {
        return;
    }
    let prefix = redis_prefix();
    let node = || {
        let mut s = presence_settings(20);
        s.redis.url = serde_json::from_value(json!(format!("redis://{REDIS_ADDR}"))).unwrap();
        s.redis.prefix = prefix.clone();
        s
    };
    let (a, b) = (start(node()).await, start(node()).await);
    let room = "chat:cluster";
    let mut ann = user(&a, "ann").await;
    ann.join(room).await;
    assert_eq!(diff(&mut ann, room).await, (names(&["ann"]), vec![]));

    let mut bob = user(&b, "bob").await;
    bob.join(room).await;
    assert_eq!(diff(&mut ann, room).await, (names(&["bob"]), vec![]));

    // Ann's second session, on B: nobody new. Bob leaving is the next news.
    let mut ann_b = user(&b, "ann").await;
    ann_b.join(room).await;
    let (joins, _) = diff(&mut bob, room).await; // bob's own join, told on B
    assert_eq!(joins, names(&["bob"]));
    bob.request(json!({"type": "leave", "room": room, "id": "l"}))
        .await;
    assert_eq!(diff(&mut ann, room).await, (vec![], names(&["bob"])));
    // On B, ann's session may first hear bob's join (it joined before B's
    // first batch), never its own; then bob's leave.
    loop {
        let (joins, leaves) = diff(&mut ann_b, room).await;
        assert!(
            !joins.contains(&"ann".to_owned()),
            "ann was there already: {joins:?}"
        );
        if !leaves.is_empty() {
            assert_eq!(leaves, names(&["bob"]));
            break;
        }
    }
}
