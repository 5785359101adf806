//! Several nodes on one Redis form one system of rooms. Against the real
//! Redis on 127.0.0.1:6379 (each test under a key prefix of its own) and a
//! `redis-server` the outage test starts itself.

mod common;

use std::time::Duration;

use holdfast::server::{Builder, Server, Settings};
use serde_json::json;

use common::services::{redis, redis_prefix, OwnRedis, REDIS_ADDR};
use common::ws::{connect, Client};
use common::{get, settings, wait_until};

fn node(url: &str, prefix: &str) -> Settings {
    let mut s = settings();
    s.redis.url = serde_json::from_value(json!(url)).unwrap();
    s.redis.prefix = prefix.to_owned();
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    s
}

async fn start(s: Settings) -> Server {
    Builder::new(s).start().await.expect("node starts")
}

/// The server API's key on the nodes of `two_nodes_with_the_api`.
const KEY: &str = "cluster-api-key-0123456789";

/// Two nodes on the shared Redis, under a prefix of their own, with the
/// server API on (key [`KEY`]).
async fn two_nodes_with_the_api() -> (Server, Server) {
    let prefix = redis_prefix();
    let url = format!("redis://{REDIS_ADDR}");
    let node_with_api = || {
        let mut s = node(&url, &prefix);
        s.api.key = holdfast::server::config::Secret::new(KEY);
        s
    };
    (start(node_with_api()).await, start(node_with_api()).await)
}

/// The frames of `n` messages of `room`, in arrival order.
async fn messages(c: &mut Client, room: &str, n: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv().await;
        if v["type"] == "message" && v["room"] == room {
            out.push(v);
        }
    }
    out
}

/// Two nodes, publishers on both: every member on either node sees the same
/// messages with the same offsets, 1..=60, no gap, no duplicate.
#[actix_rt::test]
async fn two_nodes_share_one_offset_sequence() {
    if redis("two_nodes_share_one_offset_sequence").await.is_none() {
        return;
    }
    let prefix = redis_prefix();
    let url = format!("redis://{REDIS_ADDR}");
    let a = start(node(&url, &prefix)).await;
    let b = start(node(&url, &prefix)).await;
    let mut on_a = connect(a.addr()).await;
    let mut on_b = connect(b.addr()).await;
    let ja = on_a.join("global").await;
    let jb = on_b.join("global").await;
    assert_eq!(
        ja["epoch"], jb["epoch"],
        "one epoch for the room on both nodes"
    );
    let (addr_a, addr_b) = (a.addr(), b.addr());
    let publishers: Vec<_> = [addr_a, addr_b]
        .into_iter()
        .enumerate()
        .map(|(p, addr)| {
            actix_rt::spawn(async move {
                let mut c = connect(addr).await;
                c.join("global").await;
                for i in 0..30 {
                    c.send(json!({"type": "publish", "room": "global", "data": {"p": p, "i": i}}))
                        .await;
                }
                let mut acks = Vec::new();
                while acks.len() < 30 {
                    let v = c.recv().await;
                    if v["type"] == "ack" {
                        acks.push(v["offset"].as_u64().unwrap());
                    }
                }
                acks
            })
        })
        .collect();
    let mut acks = Vec::new();
    for p in publishers {
        acks.extend(p.await.unwrap());
    }
    acks.sort_unstable();
    assert_eq!(
        acks,
        (1..=60).collect::<Vec<_>>(),
        "globally unique offsets"
    );
    let seen_a = messages(&mut on_a, "global", 60).await;
    let seen_b = messages(&mut on_b, "global", 60).await;
    let offsets: Vec<u64> = seen_a
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=60).collect::<Vec<_>>());
    assert_eq!(
        seen_a, seen_b,
        "identical frames, in the same order, on both nodes"
    );
    let (_, _, health) = get(&a, "/health/redis").await;
    assert_eq!(health["status"], "healthy", "{health}");
}

/// Redis stopped mid-test: each node keeps serving its local members and
/// reports degraded; when Redis is back, the cross-node path recovers by itself.
#[actix_rt::test]
async fn a_redis_outage_keeps_local_service_and_recovers() {
    let Some(mut own) = OwnRedis::start("a_redis_outage_keeps_local_service_and_recovers").await
    else {
        return;
    };
    let prefix = redis_prefix();
    let a = start(node(&own.url(), &prefix)).await;
    let b = start(node(&own.url(), &prefix)).await;
    let mut on_a = connect(a.addr()).await;
    let mut on_b = connect(b.addr()).await;
    on_a.join("r").await;
    on_b.join("r").await;
    on_a.request(json!({"type": "publish", "room": "r", "data": "before"}))
        .await;
    assert_eq!(
        messages(&mut on_b, "r", 1).await[0]["data"],
        "before",
        "cross-node before the outage"
    );

    own.down();
    wait_until("both nodes notice", Duration::from_secs(10), || async {
        get(&a, "/health/redis").await.0 == 503 && get(&b, "/health/redis").await.0 == 503
    })
    .await;
    assert_eq!(get(&a, "/health").await.2["status"], "degraded");
    assert_eq!(
        get(&a, "/health/ready").await.0,
        200,
        "Redis is not critical"
    );
    on_a.send(json!({"type": "publish", "room": "r", "data": "local", "id": "l"}))
        .await;
    let (mut acked, mut delivered) = (false, false);
    while !(acked && delivered) {
        let v = on_a.recv().await;
        match v["type"].as_str() {
            Some("ack") => acked = true, // publishing still works
            Some("message") => {
                assert_eq!(v["data"], "local", "{v}");
                delivered = true; // local members still receive
            }
            Some("epoch") => {} // the room went node-local: offsets restart
            _ => panic!("unexpected {v}"),
        }
    }
    // Node B's member gets nothing from node A meanwhile: its next frame is our pong.
    assert_eq!(
        on_b.request(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );

    own.up().await.unwrap();
    wait_until("both nodes reconnect", Duration::from_secs(15), || async {
        get(&a, "/health/redis").await.0 == 200 && get(&b, "/health/redis").await.0 == 200
    })
    .await;
    publish_until_it_crosses(&mut on_a, &mut on_b, "r", "after")
        .await
        .expect("no cross-node delivery after Redis came back");
}

/// Publishes `{label}1`, `{label}2`, ... to `room` from `publisher` until
/// one reaches `on_b` within 500 ms, for at most 15 s (the first publishes
/// after Redis returns may still take the local path while a hub
/// reconnects). Answers the data that crossed and that of every message
/// `on_b` received meanwhile; `None` when nothing crossed.
async fn publish_until_it_crosses(
    publisher: &mut Client,
    on_b: &mut Client,
    room: &str,
    label: &str,
) -> Option<(String, Vec<String>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    for n in 1.. {
        if std::time::Instant::now() >= deadline {
            return None;
        }
        let data = format!("{label}{n}");
        publisher
            .request(json!({"type": "publish", "room": room, "data": data, "id": n}))
            .await;
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), on_b.recv()).await {
                if v["type"] == "message" {
                    seen.push(v["data"].as_str().unwrap_or_default().to_owned());
                }
                if v["data"] == data.as_str() {
                    return Some((data, seen));
                }
            }
        }
    }
    None
}

/// Two nodes on `own`, and three clients that joined `room`: a publisher and
/// a member on node A, a member on node B.
async fn two_nodes_joined(own: &OwnRedis, room: &str) -> (Server, Server, [Client; 3]) {
    let prefix = redis_prefix();
    let a = start(node(&own.url(), &prefix)).await;
    let b = start(node(&own.url(), &prefix)).await;
    let mut clients = [
        connect(a.addr()).await,
        connect(a.addr()).await,
        connect(b.addr()).await,
    ];
    for c in &mut clients {
        c.join(room).await;
    }
    (a, b, clients)
}

/// How often a test asks again while it waits for the nodes to agree.
const POLL: Duration = Duration::from_millis(10);

/// The members of a room, as `(user, sessions)`, from `c`'s node.
async fn presence(c: &mut Client, room: &str) -> Vec<(String, u64)> {
    let reply = c
        .request(json!({"type": "presence", "room": room, "id": "p"}))
        .await;
    assert_eq!(reply["type"], "presence", "{reply}");
    reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_owned(),
                m["sessions"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Presence is the cluster's: three members over two nodes (one on A, two
/// on B) are three members on both, and a leave on one node is seen on the
/// other.
#[actix_rt::test]
async fn presence_answers_every_nodes_members() {
    if redis("presence_answers_every_nodes_members")
        .await
        .is_none()
    {
        return;
    }
    let prefix = redis_prefix();
    let url = format!("redis://{REDIS_ADDR}");
    let a = start(node(&url, &prefix)).await;
    let b = start(node(&url, &prefix)).await;
    let mut a1 = connect(a.addr()).await;
    let mut b1 = connect(b.addr()).await;
    let mut b2 = connect(b.addr()).await;
    for c in [&mut a1, &mut b1, &mut b2] {
        c.join("team").await;
    }
    let mut want: Vec<(String, u64)> = [&a1, &b1, &b2].iter().map(|c| (c.user(), 1)).collect();
    want.sort();
    // A node's own join is in its presence at once; the other node's
    // arrive as that node stores them.
    assert!(presence(&mut b1, "team").await.len() >= 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (on_a, on_b) = (
            presence(&mut a1, "team").await,
            presence(&mut b1, "team").await,
        );
        if on_a == want && on_b == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node A says {on_a:?}, node B says {on_b:?}, want {want:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    // b2 leaves on node B; node A stops listing it.
    let left = b2
        .request(json!({"type": "leave", "room": "team", "id": "l"}))
        .await;
    assert_eq!(left["type"], "left", "{left}");
    want.retain(|(user, _)| *user != b2.user());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let on_a = presence(&mut a1, "team").await;
        if on_a == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node A still says {on_a:?} after the leave on B, want {want:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `history` on a node that never saw the room answers from Redis: the
/// messages another node published, with the cluster's epoch and offsets.
#[actix_rt::test]
async fn history_on_another_node_reads_the_shared_history() {
    if redis("history_on_another_node_reads_the_shared_history")
        .await
        .is_none()
    {
        return;
    }
    let prefix = redis_prefix();
    let url = format!("redis://{REDIS_ADDR}");
    let a = start(node(&url, &prefix)).await;
    let b = start(node(&url, &prefix)).await;
    let mut on_a = connect(a.addr()).await;
    let joined = on_a.join("shared-log").await;
    for i in 1..=4 {
        let ack = on_a
            .request(json!({"type": "publish", "room": "shared-log", "data": i, "id": i}))
            .await;
        assert_eq!(ack["offset"], i, "{ack}");
    }
    let mut on_b = connect(b.addr()).await;
    let page = on_b
        .request(json!({"type": "history", "room": "shared-log", "since": 1, "id": 9}))
        .await;
    assert_eq!(page["epoch"], joined["epoch"], "{page}");
    assert_eq!(page["complete"], true, "{page}");
    let got: Vec<(u64, i64)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["data"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, [(2, 2), (3, 3), (4, 4)]);
}

/// A publish through the server API of node A reaches members on both
/// nodes with the same offset as a client's publish would take.
#[actix_rt::test]
async fn server_api_publish_reaches_both_nodes_with_one_offset() {
    if redis("server_api_publish_reaches_both_nodes_with_one_offset")
        .await
        .is_none()
    {
        return;
    }
    let prefix = redis_prefix();
    let url = format!("redis://{REDIS_ADDR}");
    let key = "cluster-api-key-0123456789";
    let mut sa = node(&url, &prefix);
    sa.api.key = serde_json::from_value(json!(key)).unwrap();
    let a = start(sa).await;
    let b = start(node(&url, &prefix)).await;
    let mut on_a = connect(a.addr()).await;
    let mut on_b = connect(b.addr()).await;
    on_a.join("api-room").await;
    on_b.join("api-room").await;
    let mut publisher = connect(b.addr()).await;
    publisher.join("api-room").await;
    let ack = publisher
        .request(json!({"type": "publish", "room": "api-room", "data": "client", "id": 1}))
        .await;
    assert_eq!(ack["offset"], 1, "{ack}");
    let res: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/publish", a.addr()))
        .bearer_auth(key)
        .json(&json!({"room": "api-room", "data": "backend"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["offset"], 2, "{res}");
    for c in [&mut on_a, &mut on_b] {
        let got = messages(c, "api-room", 2).await;
        let seen: Vec<(u64, String)> = got
            .iter()
            .map(|m| {
                (
                    m["offset"].as_u64().unwrap(),
                    m["data"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(seen, [(1, "client".to_owned()), (2, "backend".to_owned())]);
    }
}

/// Issue 12, finding 2: publish 4, Redis restarts empty in between two
/// more batches of 4 on node A. Every message acknowledged after Redis is
/// back reaches node B's member, once, in order, after an `epoch` frame
/// naming the new epoch (PROTOCOL.md, "Epoch changes while attached"); no
/// offset carries two messages within one epoch on either node.
#[actix_rt::test]
async fn acknowledged_messages_reach_the_other_node_after_redis_restarts_empty() {
    let Some(mut own) = OwnRedis::start("acked_after_redis_restarts").await else {
        return;
    };
    let (a, b, [mut publisher, mut on_a, mut on_b]) = two_nodes_joined(&own, "orders").await;
    publish_four(&mut publisher, "before").await;
    assert_eq!(messages(&mut on_b, "orders", 4).await.len(), 4);

    own.down();
    wait_until("both nodes notice", Duration::from_secs(10), || async {
        get(&a, "/health/redis").await.0 == 503 && get(&b, "/health/redis").await.0 == 503
    })
    .await;
    publish_four(&mut publisher, "during").await;
    own.up().await.unwrap();
    wait_until("both nodes reconnect", Duration::from_secs(15), || async {
        get(&a, "/health/redis").await.0 == 200 && get(&b, "/health/redis").await.0 == 200
    })
    .await;
    publish_four(&mut publisher, "after").await;
    publisher
        .request(json!({"type": "publish", "room": "orders", "data": "end", "id": "end"}))
        .await;

    // Node B: the messages of the new epoch, after an epoch frame.
    let (mut epoch, mut last, mut got) = (None::<String>, 0u64, Vec::new());
    loop {
        let v = on_b.recv().await;
        match v["type"].as_str() {
            Some("epoch") => {
                epoch = v["epoch"].as_str().map(str::to_owned);
                last = v["offset"].as_u64().unwrap();
                got.clear();
            }
            Some("message") => {
                let offset = v["offset"].as_u64().unwrap();
                assert!(
                    offset > last,
                    "offsets rise within an epoch: {offset} after {last}: {v}"
                );
                last = offset;
                got.push(v["data"].as_str().unwrap().to_owned());
                if v["data"] == "end" {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(epoch.is_some(), "node B was told of the new epoch");
    for sent in ["after0", "after1", "after2", "after3", "end"] {
        assert!(
            got.contains(&sent.to_owned()),
            "{sent} never reached node B: {got:?}"
        );
    }

    // Node A's member: every message once, offsets rising within each
    // epoch; told when the room went node-local and when it came back.
    let (mut epochs, mut last, mut seen) = (0, 0u64, Vec::new());
    loop {
        let v = on_a.recv().await;
        match v["type"].as_str() {
            Some("epoch") => {
                epochs += 1;
                last = v["offset"].as_u64().unwrap();
            }
            Some("message") => {
                let offset = v["offset"].as_u64().unwrap();
                assert!(offset > last, "{offset} after {last}: {v}");
                last = offset;
                seen.push(v["data"].as_str().unwrap().to_owned());
                if v["data"] == "end" {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(epochs >= 2, "node A's member saw {epochs} epoch changes");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "no message twice on node A: {seen:?}"
    );
    assert_eq!(seen.len(), 13, "all 12 and the end on node A: {seen:?}");
}

/// Publishes `{batch}0`..`{batch}3` to `orders`, each acknowledged.
async fn publish_four(publisher: &mut Client, batch: &str) {
    for i in 0..4 {
        let ack = publisher
            .request(json!({"type": "publish", "room": "orders", "data": format!("{batch}{i}"), "id": i}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
}

/// The server API's disconnect closes the user's connections on every
/// node: asked on node A, a client of the user on node B gets the code.
#[actix_rt::test]
async fn server_api_disconnect_closes_the_user_on_every_node() {
    if redis("server_api_disconnect_closes_the_user_on_every_node")
        .await
        .is_none()
    {
        return;
    }
    let (a, b) = two_nodes_with_the_api().await;
    wait_until("both nodes subscribed", Duration::from_secs(10), || async {
        get(&a, "/health/redis").await.0 == 200 && get(&b, "/health/redis").await.0 == 200
    })
    .await;
    let mut on_b = connect(b.addr()).await;
    let user = on_b.user();
    let res = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/users/{user}/disconnect",
            a.addr()
        ))
        .bearer_auth(KEY)
        .json(&json!({"code": 4501, "reason": "account closed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, json!({"disconnected": 0, "cluster": true}));
    assert_eq!(on_b.close_code().await, 4501);
}

/// `GET /api/v1/rooms` on one node lists the rooms with members on every
/// node, their sessions counted on all of them and Redis's offsets; a room
/// whose last member left is no longer listed.
#[actix_rt::test]
async fn server_api_lists_the_rooms_of_every_node() {
    if redis("server_api_lists_the_rooms_of_every_node")
        .await
        .is_none()
    {
        return;
    }
    let (a, b) = two_nodes_with_the_api().await;
    let list = |prefix: &'static str| {
        let addr = a.addr();
        async move {
            let res = reqwest::Client::new()
                .get(format!("http://{addr}/api/v1/rooms?prefix={prefix}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<serde_json::Value>().await.unwrap()
        }
    };
    let mut on_a = connect(a.addr()).await;
    let mut on_b = connect(b.addr()).await;
    let mut also_b = connect(b.addr()).await;
    let team = on_a.join("team:x").await;
    on_b.join("team:x").await;
    also_b.join("team:y").await;
    on_b.join("other").await;
    let ack = on_b
        .request(json!({"type": "publish", "room": "team:x", "data": 1, "id": 9}))
        .await;
    assert_eq!(ack["offset"], 1, "{ack}");
    // Members reach Redis just after their joins are answered.
    let counted = |body: &serde_json::Value| {
        body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["members"].as_u64().unwrap())
            .sum::<u64>()
    };
    wait_until("three members listed", Duration::from_secs(5), || async {
        counted(&list("team:").await) == 3
    })
    .await;
    let body = list("team:").await;
    assert_eq!(
        body,
        json!({"cluster": true, "rooms": [
            {"room": "team:x", "members": 2, "offset": 1, "epoch": team["epoch"]},
            {"room": "team:y", "members": 1, "offset": 0, "epoch": body["rooms"][1]["epoch"]},
        ]})
    );
    assert!(
        body["rooms"][1]["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let left = also_b
        .request(json!({"type": "leave", "room": "team:y", "id": 10}))
        .await;
    assert_eq!(left["type"], "left", "{left}");
    wait_until("the left room unlisted", Duration::from_secs(5), || async {
        counted(&list("team:").await) == 2
    })
    .await;
    let body = list("team:").await;
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team:x"], "{body}");
}

/// A publish that Redis ran only after its node stopped waiting for the
/// answer (1 s): a script of the test's, on a Redis of the test's own,
/// keeps Redis busy for 2.5 s, and every command behind it runs after. The
/// publisher is acknowledged, and each member on either node gets the
/// message once: its node must not deliver it on a node-local epoch and
/// then again when it reads the shared history back.
#[actix_rt::test]
async fn a_publish_redis_runs_after_the_node_gave_up_waiting_is_delivered_once() {
    let Some(own) = OwnRedis::start("a_publish_redis_runs_late").await else {
        return;
    };
    let (a, b, [mut publisher, mut on_a, mut on_b]) = two_nodes_joined(&own, "late").await;
    let publish = |data: &str| json!({"type": "publish", "room": "late", "data": data, "id": data});
    assert_eq!(publisher.request(publish("first")).await["type"], "ack");
    assert_eq!(messages(&mut on_b, "late", 1).await[0]["data"], "first");

    let busy = own.busy(2500).await;
    let ack = publisher.request(publish("held")).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(busy.await.unwrap(), ":1");
    wait_until("both nodes on Redis", Duration::from_secs(15), || async {
        get(&a, "/health/redis").await.0 == 200 && get(&b, "/health/redis").await.0 == 200
    })
    .await;
    // A publish that crosses to node B ends what each member is read for.
    let (end, seen_on_b) = publish_until_it_crosses(&mut publisher, &mut on_b, "late", "end")
        .await
        .expect("no publish reached node B after the pause");
    let mut seen_on_a = Vec::new();
    while seen_on_a.last() != Some(&end) {
        let v = on_a.recv().await;
        if v["type"] == "message" {
            seen_on_a.push(v["data"].as_str().unwrap().to_owned());
        }
    }
    for (node, seen) in [("A", &seen_on_a), ("B", &seen_on_b)] {
        let held = seen.iter().filter(|d| *d == "held").count();
        assert_eq!(
            held, 1,
            "node {node}'s member got it {held} times: {seen:?}"
        );
    }
}
