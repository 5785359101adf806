//! Two `holdfast` processes on one Redis, one of them killed with SIGKILL
//! (no goodbye, no shutdown): what the survivor answers. Against the real
//! Redis on 127.0.0.1:6379, each test under a key prefix of its own.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{next_id, Server};

/// Where the shared Redis listens.
const REDIS_ADDR: &str = "127.0.0.1:6379";
/// The presence expiry the nodes run with (`redis.presence_ttl_ms`).
const PRESENCE_TTL: Duration = Duration::from_millis(1500);
/// How often a test asks again while it waits for a node to agree.
const POLL: Duration = Duration::from_millis(20);

/// Whether the shared Redis answers; `false` after printing why the test is
/// skipped. Panics under `CI=true`.
fn redis(test: &str) -> bool {
    let addr = REDIS_ADDR.parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: Redis is not reachable at {REDIS_ADDR}, and CI=true requires it");
    }
    eprintln!("SKIPPED {test}: Redis is not reachable at {REDIS_ADDR} (start it, or run under CI=true to make this a failure)");
    false
}

/// A node of the cluster `prefix`.
fn node(prefix: &str) -> Server {
    let ttl = PRESENCE_TTL.as_millis().to_string();
    Server::start(&[
        ("HOLDFAST__REDIS__URL", &format!("redis://{REDIS_ADDR}")),
        ("HOLDFAST__REDIS__PREFIX", prefix),
        ("HOLDFAST__REDIS__PRESENCE_TTL_MS", &ttl),
    ])
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client of `addr`, past its `welcome`.
async fn connect(addr: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("upgrade");
    assert_eq!(next_reply(&mut ws).await["type"], "welcome");
    ws
}

/// The next frame that is not a room `message`.
async fn next_reply(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a valid frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "message" {
                return v;
            }
        }
    }
}

async fn request(ws: &mut Ws, frame: Value) -> Value {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    next_reply(ws).await
}

/// Sessions in `room`, from `ws`'s node.
async fn sessions(ws: &mut Ws, room: &str) -> u64 {
    let reply = request(ws, json!({"type": "presence", "room": room, "id": "p"})).await;
    reply["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"))
        .iter()
        .map(|m| m["sessions"].as_u64().unwrap())
        .sum()
}

/// A node killed with SIGKILL leaves the cluster's presence within
/// `redis.presence_ttl_ms`: its members are no longer listed by the nodes
/// that survive it, and the survivor's own stay.
#[tokio::test]
async fn a_killed_nodes_members_expire_from_presence() {
    if !redis("a_killed_nodes_members_expire_from_presence") {
        return;
    }
    let prefix = format!("hfk{}x{}", std::process::id(), next_id());
    let mut a = node(&prefix);
    let b = node(&prefix);
    let mut on_a = connect(&a.addr).await;
    let mut on_b = connect(&b.addr).await;
    for ws in [&mut on_a, &mut on_b] {
        let joined = request(ws, json!({"type": "join", "room": "crew", "id": 1})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions(&mut on_b, "crew").await != 2 {
        assert!(
            Instant::now() < deadline,
            "node B never listed both members"
        );
        tokio::time::sleep(POLL).await;
    }

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    // Within the expiry (plus a refresh period of slack), B lists only its own.
    let deadline = killed + PRESENCE_TTL * 2 + Duration::from_secs(1);
    loop {
        let n = sessions(&mut on_b, "crew").await;
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions listed {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
    // And it stays so: B's own member is refreshed, not expired.
    tokio::time::sleep(PRESENCE_TTL * 2).await;
    assert_eq!(
        sessions(&mut on_b, "crew").await,
        1,
        "B's own member expired"
    );
    drop(on_a);
}
