//! Chaos under load, bounded for CI (`benches/chaos.rs` runs it longer):
//! every actor of every node crashed in turn, for real (a panic inside the
//! actor, through the admin API's chaos route), while members and
//! acknowledged publishers work across several rooms; then what each real
//! client received is checked against what was acknowledged
//! (`common::chaos`): nothing lost, duplicated or reordered, offsets
//! gapless within each epoch, no client disconnected. With two nodes, Redis
//! is also killed and restarted empty in the middle.

mod common;

use std::time::{Duration, Instant};

use holdfast::server::{Builder, Server, Settings};
use serde_json::json;

use common::chaos::{self, Figures, Node, Plan};
use common::services::{redis_prefix, OwnRedis};
use common::{get, settings, wait_until};

const TOKEN: &str = "chaos-admin-token-0123456789";

/// Chaos on, and supervision that lets a drill crash the same actor again
/// and again: restarts within 1 s, no escalation from the drill itself.
fn chaos_settings() -> Settings {
    let mut s = settings();
    s.admin.token = holdfast::server::config::Secret::new(TOKEN);
    s.admin.chaos = true;
    s.supervision.backoff_max_ms = 1000;
    s.supervision.max_restarts = 1000;
    s.supervision.max_consecutive_failures = 1000;
    s
}

async fn start(s: Settings) -> (Server, Node) {
    let server = Builder::new(s).start().await.expect("server starts");
    let node = Node {
        addr: server.addr(),
        admin_token: TOKEN.into(),
    };
    (server, node)
}

fn plan(seconds: u64) -> Plan {
    Plan {
        rooms: 4,
        subscribers: 2,
        publishers: 1,
        publish_every: Duration::from_millis(25),
        duration: Duration::from_secs(seconds),
        crash_pause: Duration::from_millis(50),
        actors: Vec::new(),
    }
}

/// Messages a node's hubs published, from `/health`.
async fn published(server: &Server) -> u64 {
    let (_, _, health) = get(server, "/health").await;
    health["checks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with("rooms-"))
        .filter_map(|(_, check)| check["details"]["published"].as_u64())
        .sum()
}

fn assert_held(f: &Figures) {
    let failures = f.failures();
    assert!(failures.is_empty(), "{failures:?}\n{f:#?}");
}

/// One node: every actor crashed in turn for 15 s under load.
#[actix_rt::test]
async fn every_actor_crashed_under_load_loses_nothing_acknowledged() {
    let (server, node) = start(chaos_settings()).await;
    let f = chaos::run(&[node], &plan(15), || async { None }).await;
    f.print("one node");
    assert!(f.crashes >= 20, "{f:#?}");
    assert_held(&f);
    assert_eq!(get(&server, "/health/ready").await.0, 200);
}

/// Two nodes on a Redis of the test's own, every actor of both crashed in
/// turn, and Redis killed and restarted empty once load is under way
/// (restarted as soon as both nodes noticed):
/// messages acknowledged outside the outage reach both nodes; those
/// acknowledged during it reach the publisher's node; each epoch's offsets
/// are gapless on both.
#[actix_rt::test]
async fn two_nodes_with_redis_restarted_empty_lose_nothing_acknowledged() {
    let Some(mut redis) = OwnRedis::start("chaos_two_nodes").await else {
        return;
    };
    let prefix = redis_prefix();
    let node = |url: &str| {
        let mut s = chaos_settings();
        s.redis.url = serde_json::from_value(json!(url)).unwrap();
        s.redis.prefix = prefix.clone();
        s
    };
    let (a, node_a) = start(node(&redis.url())).await;
    let (b, node_b) = start(node(&redis.url())).await;
    let f = chaos::run(&[node_a, node_b], &plan(20), || async {
        wait_until("load on both nodes", Duration::from_secs(30), || async {
            published(&a).await >= 100 && published(&b).await >= 100
        })
        .await;
        let from = Instant::now();
        redis.down();
        wait_until(
            "both nodes notice Redis is gone",
            Duration::from_secs(10),
            || async {
                get(&a, "/health/redis").await.0 == 503 && get(&b, "/health/redis").await.0 == 503
            },
        )
        .await;
        redis.up().await.unwrap();
        wait_until(
            "both nodes back on Redis",
            Duration::from_secs(20),
            || async {
                get(&a, "/health/redis").await.0 == 200 && get(&b, "/health/redis").await.0 == 200
            },
        )
        .await;
        Some((from, Instant::now()))
    })
    .await;
    f.print("two nodes, Redis restarted empty");
    assert!(f.epoch_frames > 0, "the outage changed epochs: {f:#?}");
    assert_held(&f);
}

/// A room hub that crashes while Redis stores one of its publishes: the
/// message is stored, so its publisher is acknowledged (an `unavailable`
/// would invite a retry, and a second copy), and the member on the other
/// node gets it once. `CLIENT PAUSE 900 WRITE`, on a Redis of the test's
/// own, holds the store (under the node's 1 s timeout) while the hub is
/// crashed through the admin API.
#[actix_rt::test]
async fn a_hub_crashed_while_redis_stores_a_publish_still_acknowledges_it() {
    let Some(redis) = OwnRedis::start("a_hub_crashed_while_redis_stores").await else {
        return;
    };
    let prefix = redis_prefix();
    let node = || {
        let mut s = chaos_settings();
        s.redis.url = serde_json::from_value(json!(redis.url())).unwrap();
        s.redis.prefix = prefix.clone();
        s
    };
    let (a, _) = start(node()).await;
    let (b, _) = start(node()).await;
    let mut publisher = common::ws::connect(a.addr()).await;
    let mut on_b = common::ws::connect(b.addr()).await;
    publisher.join("stored").await;
    on_b.join("stored").await;

    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", "900", "WRITE"]).await,
        "+OK"
    );
    publisher
        .send(json!({"type": "publish", "room": "stored", "data": "kept", "id": "kept"}))
        .await;
    wait_until(
        "the store waits in Redis",
        Duration::from_secs(5),
        || async {
            redis
                .command(&["CLIENT", "LIST"])
                .await
                .contains("cmd=evalsha")
        },
    )
    .await;
    let hub = format!("rooms-{}", a.rooms().shard_of("stored"));
    let crashed = reqwest::Client::new()
        .post(format!("http://{}/admin/actors/{hub}/crash", a.addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(crashed.status(), 202);

    let answer = publisher.recv_reply().await;
    assert_eq!(answer["type"], "ack", "the stored publish: {answer}");
    let v = loop {
        let v = on_b.recv().await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(v["data"], "kept", "{v}");
    on_b.send(json!({"type": "ping", "id": 1})).await;
    let next = on_b.recv().await;
    assert_eq!(
        next["type"], "pong",
        "node B got it once, then our pong: {next}"
    );
}
