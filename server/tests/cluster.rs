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

/// The services lease the nodes run with (`redis.lease_ttl_ms`).
const LEASE_TTL: Duration = Duration::from_millis(1500);

/// A JSON feed on a free port whose document changes with every request
/// (`{"n": <request number>}`); it records the path of each request, so a
/// test can tell which node polls it (each node's config names its own
/// path).
struct Feed {
    port: u16,
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Feed {
    fn start() -> Feed {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = paths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the head, up to the blank line.
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(path);
                    log.len()
                };
                let body = format!("{{\"n\":{n}}}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Feed { port, paths }
    }

    /// How many requests asked for `path`.
    fn requests(&self, path: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// A node of the cluster `prefix` whose trending feed is `path` on `feed`.
fn trending_node(
    prefix: &str,
    feed: &Feed,
    path: &str,
    dir: &std::path::Path,
    lease_ttl: Duration,
) -> Server {
    let config = dir.join(format!("{}.toml", path.trim_start_matches('/')));
    std::fs::write(
        &config,
        format!(
            "[trending]\ninterval_ms = 200\ncache_ttl_ms = 1\nretry_tries = 1\n\
             [[trending.feeds]]\nname = \"news\"\nurl = \"http://127.0.0.1:{}{path}\"\n",
            feed.port
        ),
    )
    .unwrap();
    let ttl = lease_ttl.as_millis().to_string();
    Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[
            ("HOLDFAST__REDIS__URL", &format!("redis://{REDIS_ADDR}")),
            ("HOLDFAST__REDIS__PREFIX", prefix),
            ("HOLDFAST__REDIS__LEASE_TTL_MS", &ttl),
        ],
    )
}

/// The next `$trending` message: its offset and the feed's `n`.
async fn next_trending(ws: &mut Ws) -> (u64, u64) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a $trending message within 10 s")
            .expect("the socket is open")
            .expect("a valid frame");
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "message" && v["room"] == "$trending" {
                return (
                    v["offset"].as_u64().unwrap(),
                    v["data"]["data"]["n"].as_u64().unwrap(),
                );
            }
        }
    }
}

/// The index of the one node that leads, once both agree on it.
async fn leader_of(nodes: &[&Server]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let roles: Vec<Value> = nodes.iter().map(|n| role(n)).collect();
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|&i| roles[i]["role"] == "leader")
            .collect();
        if leaders.len() == 1 && roles.iter().all(|r| r["leader"] == roles[0]["leader"]) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {roles:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// `/health/trending`'s details: `role`, `leader`, `node`.
fn role(server: &Server) -> Value {
    // The blocking HTTP client runs a runtime of its own.
    let (status, body) = tokio::task::block_in_place(|| server.get("/health/trending"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["details"].clone()
}

/// With two nodes on one Redis the trending service runs on one of them:
/// only the leader polls the feed, and `$trending` gets each change once,
/// with the same offsets, on both nodes. After the leader is killed with
/// SIGKILL the survivor takes the lease within its TTL, polls the feed
/// itself, and its clients keep getting each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_runs_the_services_and_another_takes_over_when_it_dies() {
    if !redis("one_node_runs_the_services_and_another_takes_over_when_it_dies") {
        return;
    }
    let prefix = format!("hfl{}x{}", std::process::id(), next_id());
    let dir = tempfile::tempdir().unwrap();
    let feed = Feed::start();
    let mut nodes = vec![
        (
            trending_node(&prefix, &feed, "/a", dir.path(), LEASE_TTL),
            "/a",
        ),
        (
            trending_node(&prefix, &feed, "/b", dir.path(), LEASE_TTL),
            "/b",
        ),
    ];
    let mut clients = Vec::new();
    for (node, _) in &nodes {
        let mut ws = connect(&node.addr).await;
        let joined = request(
            &mut ws,
            json!({"type": "join", "room": "$trending", "id": 1}),
        )
        .await;
        assert_eq!(joined["type"], "joined", "{joined}");
        clients.push(ws);
    }
    // Once both have a role, exactly one leads and both name it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let roles: Vec<Value> = nodes.iter().map(|(n, _)| role(n)).collect();
        let leaders: Vec<usize> = (0..2).filter(|&i| roles[i]["role"] == "leader").collect();
        if leaders.len() == 1 && roles[0]["leader"] == roles[1]["leader"] {
            let i = leaders[0];
            assert_eq!(roles[i]["leader"], roles[i]["node"], "{roles:?}");
            break i;
        }
        assert!(Instant::now() < deadline, "no single leader: {roles:?}");
        tokio::time::sleep(POLL).await;
    };
    let standby = 1 - leader;

    // Both nodes' clients get the same changes, each once, in one order.
    let (mut seen_leader, mut seen_standby) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        seen_leader.push(next_trending(&mut clients[leader]).await);
        seen_standby.push(next_trending(&mut clients[standby]).await);
    }
    let start = seen_leader[0].0.max(seen_standby[0].0);
    seen_leader.retain(|m| m.0 >= start);
    seen_standby.retain(|m| m.0 >= start);
    let common = seen_leader.len().min(seen_standby.len());
    assert!(common >= 3, "{seen_leader:?} / {seen_standby:?}");
    assert_eq!(seen_leader[..common], seen_standby[..common]);
    for w in seen_leader.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "consecutive offsets: {seen_leader:?}");
        assert!(w[1].1 > w[0].1, "each change once: {seen_leader:?}");
    }
    let (standby_path, leader_path) = (nodes[standby].1, nodes[leader].1);
    assert_eq!(
        feed.requests(standby_path),
        0,
        "the standby polled the feed"
    );
    assert!(feed.requests(leader_path) >= 5);

    // The leader dies without a goodbye; the survivor takes over.
    nodes[leader].0.signal("KILL");
    nodes[leader].0.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    let deadline = killed + LEASE_TTL * 2 + Duration::from_secs(2);
    while feed.requests(standby_path) == 0 {
        assert!(
            Instant::now() < deadline,
            "the survivor never polled the feed after the kill"
        );
        tokio::time::sleep(POLL).await;
    }
    let polled_after = feed.requests(leader_path);
    let mut after = Vec::new();
    while after.len() < 4 {
        let m = next_trending(&mut clients[standby]).await;
        after.push(m);
    }
    for w in after.windows(2) {
        assert!(w[1].0 > w[0].0, "offsets increase: {after:?}");
        assert!(w[1].1 > w[0].1, "each change once: {after:?}");
    }
    assert_eq!(
        feed.requests(leader_path),
        polled_after,
        "the dead leader polled"
    );
    let details = role(&nodes[standby].0);
    assert_eq!(details["role"], "leader", "{details}");
    assert_eq!(details["leader"], details["node"], "{details}");
}

/// A leader stopped gracefully (SIGTERM) gives the lease up: the other node
/// runs the services at its next claim, a third of the TTL, instead of
/// waiting for the lease to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_the_services_over_at_once() {
    if !redis("a_graceful_stop_hands_the_services_over_at_once") {
        return;
    }
    // Long enough that waiting for the expiry would miss the bound below.
    let ttl = Duration::from_secs(24);
    let prefix = format!("hfg{}x{}", std::process::id(), next_id());
    let dir = tempfile::tempdir().unwrap();
    let feed = Feed::start();
    let mut a = trending_node(&prefix, &feed, "/a", dir.path(), ttl);
    let mut b = trending_node(&prefix, &feed, "/b", dir.path(), ttl);
    let leader = leader_of(&[&a, &b]).await;
    let (stopping, survivor_path) = if leader == 0 {
        (&mut a, "/b")
    } else {
        (&mut b, "/a")
    };
    stopping.signal("TERM");
    assert_eq!(stopping.wait_exit(Duration::from_secs(30)), 0);
    let stopped = Instant::now();
    // Next claim within ttl / 3 = 8 s; an expiry would take at least 16 s more.
    let deadline = stopped + ttl / 3 + Duration::from_secs(4);
    while feed.requests(survivor_path) == 0 {
        assert!(
            Instant::now() < deadline,
            "the survivor did not take over within {:?} of the stop",
            deadline - stopped
        );
        tokio::time::sleep(POLL).await;
    }
}
