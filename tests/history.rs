//! The `history` request (PROTOCOL.md, "History") through a real client.

mod common;

use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};

use common::settings;
use common::ws::connect;

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

fn offsets(reply: &Value) -> Vec<u64> {
    reply["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {reply}"))
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// Messages after `since`, oldest first, at most `limit`, each with its
/// offset, publisher and data as published; the room's epoch; `complete`
/// while history reaches back to `since + 1`. No membership is needed.
#[actix_rt::test]
async fn history_pages_through_a_room_without_joining_it() {
    let server = start(settings()).await;
    let mut publisher = connect(server.addr()).await;
    let joined = publisher.join("log").await;
    for i in 1..=5 {
        let ack = publisher
            .request(json!({"type": "publish", "room": "log", "data": {"n": i}, "id": i}))
            .await;
        assert_eq!(ack["offset"], i, "{ack}");
    }
    let mut reader = connect(server.addr()).await;
    let all = reader
        .request(json!({"type": "history", "room": "log", "id": 1}))
        .await;
    assert_eq!(all["type"], "history", "{all}");
    assert_eq!(all["id"], 1);
    assert_eq!(all["room"], "log");
    assert_eq!(all["epoch"], joined["epoch"]);
    assert_eq!(all["complete"], true);
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5]);
    assert_eq!(
        all["messages"][0],
        json!({"offset": 1, "from": publisher.user(), "data": {"n": 1}})
    );
    let page = reader
        .request(json!({"type": "history", "room": "log", "since": 2, "limit": 2, "id": 2}))
        .await;
    assert_eq!(
        (offsets(&page), page["complete"].clone()),
        (vec![3, 4], json!(true))
    );
    let tail = reader
        .request(json!({"type": "history", "room": "log", "since": 5, "id": 3}))
        .await;
    assert_eq!(
        (offsets(&tail), tail["complete"].clone()),
        (vec![], json!(true))
    );
    let empty = reader
        .request(json!({"type": "history", "room": "never-used", "id": 4}))
        .await;
    assert_eq!(
        (offsets(&empty), empty["complete"].clone()),
        (vec![], json!(true))
    );
}

/// Past `rooms.history_size`, history no longer reaches back: `complete`
/// is false and the oldest message kept comes first.
#[actix_rt::test]
async fn history_that_no_longer_reaches_back_is_incomplete() {
    let mut s = settings();
    s.rooms.history_size = 3;
    let server = start(s).await;
    let mut c = connect(server.addr()).await;
    c.join("short").await;
    for i in 1..=6 {
        c.request(json!({"type": "publish", "room": "short", "data": i, "id": i}))
            .await;
    }
    let reply = c
        .request(json!({"type": "history", "room": "short", "id": 1}))
        .await;
    assert_eq!(
        (offsets(&reply), reply["complete"].clone()),
        (vec![4, 5, 6], json!(false))
    );
    let reply = c
        .request(json!({"type": "history", "room": "short", "since": 3, "id": 2}))
        .await;
    assert_eq!(
        (offsets(&reply), reply["complete"].clone()),
        (vec![4, 5, 6], json!(true))
    );
}

/// Bad fields are `bad_request` naming the field; a bad room is `invalid_room`.
#[actix_rt::test]
async fn bad_history_requests_name_the_field() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    for (frame, field) in [
        (
            json!({"type": "history", "room": "r", "since": -1, "id": 1}),
            "`since`",
        ),
        (
            json!({"type": "history", "room": "r", "limit": "x", "id": 1}),
            "`limit`",
        ),
        (json!({"type": "history", "id": 1}), "`room`"),
    ] {
        let reply = c.request(frame.clone()).await;
        assert_eq!(reply["code"], "bad_request", "{frame} -> {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    let reply = c
        .request(json!({"type": "history", "room": "a b", "id": 2}))
        .await;
    assert_eq!(reply["code"], "invalid_room", "{reply}");
}

/// A namespace's `history_size` bounds its rooms' history (and `resume`),
/// on one node and on two sharing Redis: `ticker:` keeps 3, `live:` none;
/// other rooms keep the `[rooms]` default.
#[actix_rt::test]
async fn a_namespace_keeps_its_own_history_size() {
    use common::services::{redis, redis_prefix, REDIS_ADDR};
    use holdfast::server::config::NamespaceSettings;

    let with_namespaces = |mut s: Settings| {
        s.rooms.namespaces = vec![
            NamespaceSettings::new("ticker:").history(3, 3_600_000),
            NamespaceSettings::new("live:").history(0, 3_600_000),
        ];
        s
    };
    let mut nodes = vec![start(with_namespaces(settings())).await];
    if redis("a_namespace_keeps_its_own_history_size")
        .await
        .is_some()
    {
        let mut s = with_namespaces(settings());
        s.redis.url = serde_json::from_value(json!(format!("redis://{REDIS_ADDR}"))).unwrap();
        s.redis.prefix = redis_prefix();
        nodes.push(start(s).await);
    }
    for server in &nodes {
        let mut c = connect(server.addr()).await;
        for room in ["ticker:btc", "live:cam", "log"] {
            c.join(room).await;
            for i in 1..=10 {
                let ack = c
                    .request(json!({"type": "publish", "room": room, "data": i, "id": i}))
                    .await;
                assert_eq!(ack["type"], "ack", "{ack}");
            }
        }
        let history = |room: &str| json!({"type": "history", "room": room, "id": room});
        let ticker = c.request(history("ticker:btc")).await;
        assert_eq!(offsets(&ticker), [8, 9, 10], "{ticker}");
        assert_eq!(ticker["complete"], false);
        let live = c.request(history("live:cam")).await;
        assert_eq!(offsets(&live), Vec::<u64>::new(), "{live}");
        assert_eq!(live["complete"], false);
        let log = c.request(history("log")).await;
        assert_eq!(offsets(&log).len(), 10, "{log}");
        assert_eq!(log["complete"], true);

        // A resume from offset 5 replays what the namespace keeps.
        let session = c.session();
        let epochs = json!({"ticker:btc": ticker["epoch"], "live:cam": live["epoch"]});
        drop(c);
        let mut back = connect(server.addr()).await;
        let resumed = back
            .request(json!({"type": "resume", "session": session,
                "rooms": {"ticker:btc": 5, "live:cam": 5}, "epochs": epochs, "id": "r"}))
            .await;
        assert_eq!(resumed["type"], "resumed", "{resumed}");
        let rooms = &resumed["rooms"];
        for (room, replayed) in [("ticker:btc", 3), ("live:cam", 0)] {
            assert_eq!(rooms[room]["replayed"], replayed, "{resumed}");
            assert_eq!(rooms[room]["complete"], false, "{resumed}");
        }
    }
}
