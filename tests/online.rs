//! `user_online` / `user_offline` (the application layer's online and
//! offline events) through real clients: a user handler and the event bus
//! see a user's first session begin and their last end after the session
//! TTL, once, on one node and across two sharing Redis; a reconnect within
//! the TTL is no offline.

mod common;

use std::time::Duration;

use actix::prelude::*;
use holdfast::actors::supervision::{Child, ChildSpec};
use holdfast::server::config::Secret;
use holdfast::server::handlers::{UserOffline, UserOnline};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use common::services::{redis, redis_prefix, OwnRedis, REDIS_ADDR};
use common::ws::{connect_as, Client};
use common::{get, settings, wait_until};

const SECRET: &str = "online-test-secret-0123456789abcdef";
const ADMIN: &str = "online-test-admin-token-0123456789";
/// The session TTL: the grace before a closed session's user is offline.
const GRACE_MS: u64 = 1500;

/// Writes what it is told, `online ann` / `offline ann`.
struct Recorder {
    log: mpsc::UnboundedSender<String>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Child for Recorder {}

impl Handler<UserOnline> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: UserOnline, _: &mut Context<Self>) {
        let _ = self.log.send(format!("online {}", msg.user));
    }
}

impl Handler<UserOffline> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: UserOffline, _: &mut Context<Self>) {
        let _ = self.log.send(format!("offline {}", msg.user));
    }
}

fn online_settings() -> Settings {
    let mut s = settings();
    s.auth.jwt_secret = Secret::new(SECRET);
    s.admin.token = Secret::new(ADMIN);
    s.session.ttl_ms = GRACE_MS;
    s
}

async fn start(s: Settings, log: &mpsc::UnboundedSender<String>) -> Server {
    let log = log.clone();
    Builder::new(s)
        .user_handler(ChildSpec::new("recorder", move |_| Recorder {
            log: log.clone(),
        }))
        .start()
        .await
        .expect("server starts")
}

async fn user(server: &Server, sub: &str) -> Client {
    connect_as(server.addr(), SECRET, sub, json!({})).await
}

/// The next thing a user handler was told.
async fn next(log: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(15), log.recv())
        .await
        .expect("a user event within 15 s")
        .expect("the log is open")
}

/// The user events on the bus (`/admin/events`), oldest first.
async fn bus(server: &Server) -> Vec<String> {
    let body: Value = reqwest::Client::new()
        .get(format!("http://{}/admin/events?n=1000", server.addr()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("user_online" | "user_offline")))
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["user"].as_str().unwrap()
            )
        })
        .collect()
}

/// Online at the first session; nothing for a second session, or for both
/// closing and one resumed within the TTL; offline once the last
/// session's TTL ran out; on the bus as well.
#[actix_rt::test]
async fn a_user_is_online_from_their_first_session_to_the_end_of_their_last() {
    let (tx, mut log) = mpsc::unbounded_channel();
    let server = start(online_settings(), &tx).await;
    let first = user(&server, "ann").await;
    assert_eq!(next(&mut log).await, "online ann");
    let second = user(&server, "ann").await;
    let session = first.session();
    drop(second);
    drop(first);
    // Back within the TTL, resuming the first session.
    let mut back = user(&server, "ann").await;
    let resumed = back
        .request(json!({"type": "resume", "session": session, "rooms": {}, "id": "r"}))
        .await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    drop(back);
    // The next news is ann's offline, one TTL after `back` closed.
    assert_eq!(next(&mut log).await, "offline ann");
    let _bob = user(&server, "bob").await;
    assert_eq!(next(&mut log).await, "online bob");
    assert_eq!(
        bus(&server).await,
        ["user_online ann", "user_offline ann", "user_online bob"]
    );
}

/// A session the application ends (a disconnect that forgets it) is an
/// offline at once, not after the TTL.
#[actix_rt::test]
async fn an_ended_session_is_offline_at_once() {
    let (tx, mut log) = mpsc::unbounded_channel();
    let mut s = online_settings();
    s.session.ttl_ms = 600_000;
    s.api.key = Secret::new("online-test-api-key-0123456789");
    let server = start(s, &tx).await;
    let mut ann = user(&server, "ann").await;
    assert_eq!(next(&mut log).await, "online ann");
    let status = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/users/ann/disconnect",
            server.addr()
        ))
        .bearer_auth("online-test-api-key-0123456789")
        .json(&json!({"code": 4500, "reason": "banned", "forget": true}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    assert_eq!(ann.close_code().await, 4500);
    assert_eq!(next(&mut log).await, "offline ann");
}

/// Two nodes on one Redis: ann on both is online once; closing one of her
/// sessions is nothing; closing the other is one offline, told by one node
/// only, however many sweeps both nodes run after it.
#[actix_rt::test]
async fn online_and_offline_are_once_per_cluster() {
    if redis("online_and_offline_are_once_per_cluster")
        .await
        .is_none()
    {
        return;
    }
    let prefix = redis_prefix();
    let node = || {
        let mut s = online_settings();
        s.redis.url = serde_json::from_value(json!(format!("redis://{REDIS_ADDR}"))).unwrap();
        s.redis.prefix = prefix.clone();
        s
    };
    let (tx, mut log) = mpsc::unbounded_channel();
    let (a, b) = (start(node(), &tx).await, start(node(), &tx).await);
    let on_a = user(&a, "ann").await;
    assert_eq!(next(&mut log).await, "online ann");
    let on_b = user(&b, "ann").await;
    drop(on_a);
    drop(on_b);
    assert_eq!(next(&mut log).await, "offline ann");
    // Carol's whole stay spans more sweeps on both nodes than ann's
    // offline needed; nothing else of ann comes in between.
    let carol = user(&a, "carol").await;
    assert_eq!(next(&mut log).await, "online carol");
    drop(carol);
    assert_eq!(next(&mut log).await, "offline carol");
    let mut told: Vec<String> = bus(&a).await;
    told.extend(bus(&b).await);
    told.sort();
    assert_eq!(
        told,
        [
            "user_offline ann",
            "user_offline carol",
            "user_online ann",
            "user_online carol"
        ],
        "each change on one node's bus, once"
    );
}

/// A session that begins while Redis is down is online once Redis is back
/// (the change waits for it, it is not lost), and offline after it closes.
#[actix_rt::test]
async fn a_change_made_while_redis_is_down_is_told_when_it_is_back() {
    let Some(mut own) =
        OwnRedis::start("a_change_made_while_redis_is_down_is_told_when_it_is_back").await
    else {
        return;
    };
    let mut s = online_settings();
    s.redis.url = serde_json::from_value(json!(own.url())).unwrap();
    s.redis.prefix = redis_prefix();
    let (tx, mut log) = mpsc::unbounded_channel();
    let server = start(s, &tx).await;
    own.down();
    wait_until(
        "the node sees redis down",
        Duration::from_secs(10),
        || async { get(&server, "/health/redis").await.0 == 503 },
    )
    .await;
    let ann = user(&server, "ann").await;
    wait_until("ann's attach failed", Duration::from_secs(10), || async {
        get(&server, "/health/online").await.2["details"]["behind"] == true
    })
    .await;
    own.up().await.expect("redis restarts");
    assert_eq!(next(&mut log).await, "online ann");
    drop(ann);
    assert_eq!(next(&mut log).await, "offline ann");
}
