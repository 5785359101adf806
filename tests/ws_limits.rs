//! The WebSocket protocol's limits and slow clients, through a real client
//! against the server in-process: oversize and binary frames, the rate
//! limit and floods, the connection limit and origins, heartbeats, and the
//! outbound queue's bound (1013, or the namespace's `slow_consumer` policy).

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use holdfast::server::config::{NamespaceSettings, SlowConsumer};
use holdfast::server::{Builder, Server, Settings};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::ws::{connect, try_connect, Client};
use common::{metric, settings, wait_until};

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

/// `data` over the limit gets `too_large`; a frame over `max_frame_bytes`
/// closes the socket with 1009.
#[actix_rt::test]
async fn oversize_data_and_frames() {
    let mut s = settings();
    s.ws.max_data_bytes = 1000;
    s.ws.max_frame_bytes = 4000;
    let server = start(s).await;
    let mut c = connect(server.addr()).await;
    c.join("lobby").await;
    let big = "x".repeat(1500);
    let err = c
        .request(json!({"type": "publish", "room": "lobby", "data": big, "id": 1}))
        .await;
    assert_eq!(err["code"], "too_large", "{err}");
    assert_eq!(
        c.request(json!({"type": "ping", "id": 2})).await["type"],
        "pong"
    );
    c.send(json!({"type": "publish", "room": "lobby", "data": "y".repeat(5000)}))
        .await;
    assert_eq!(c.close_code().await, 1009);
}

/// A binary frame gets `unsupported` and the socket stays usable.
#[actix_rt::test]
async fn binary_frames_are_unsupported_but_harmless() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    c.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    let err = c.recv().await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("unsupported")),
        "{err}"
    );
    assert_eq!(c.join("after").await["type"], "joined");
}

/// Over the rate the frame is dropped with `rate_limited` (id echoed);
/// repeated abuse closes with 1008.
#[actix_rt::test]
async fn rate_limit_then_abuse_closes_with_1008() {
    let mut s = settings();
    s.ws.rate_per_sec = 0.5;
    s.ws.rate_burst = 3.0;
    s.ws.abuse_limit = 4;
    let server = start(s).await;
    let mut c = connect(server.addr()).await;
    for i in 0..6 {
        c.send(json!({"type": "ping", "id": i})).await;
    }
    for i in 0..3 {
        assert_eq!(c.recv().await, json!({"type": "pong", "id": i}));
    }
    for i in 3..6 {
        let err = c.recv().await;
        assert_eq!(
            (err["code"].as_str(), &err["id"]),
            (Some("rate_limited"), &json!(i)),
            "{err}"
        );
    }
    c.send(json!({"type": "ping", "id": 6})).await;
    assert_eq!(c.close_code().await, 1008);
    assert!(metric(&server, "holdfast_ws_rate_limited_total").await >= 4.0);
}

/// A client silent for two heartbeats is dropped and leaves its rooms.
#[actix_rt::test]
async fn heartbeat_timeout_drops_a_silent_client() {
    let mut s = settings();
    s.ws.heartbeat_ms = 100;
    let server = start(s).await;
    let mut silent = connect(server.addr()).await;
    silent.join("hb").await;
    let mut watcher = connect(server.addr()).await;
    watcher.join("hb").await;
    // `silent` is never read from again, so it never answers a ping. The
    // watcher's presence requests are the poll, and they keep it alive.
    let watcher = tokio::sync::Mutex::new(watcher);
    let w = &watcher;
    wait_until(
        "the silent client leaves the room",
        Duration::from_secs(5),
        move || async move {
            let p = w
                .lock()
                .await
                .request(json!({"type": "presence", "room": "hb"}))
                .await;
            p["members"].as_array().is_some_and(|m| m.len() == 1)
        },
    )
    .await;
    let mut watcher = watcher.into_inner();
    let p = watcher
        .request(json!({"type": "presence", "room": "hb"}))
        .await;
    assert_eq!(p["members"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["members"][0]["user"], watcher.user().as_str());
    // The socket of the silent client ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = silent.ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the silent client's socket was not closed");
}

/// A client with a tiny receive buffer that reads late: what waited in its
/// outbound queue (frames of very different sizes, some larger than the
/// chunks the queue hands to the socket, several small ones per chunk)
/// arrives whole, in order, each message its own WebSocket frame.
#[actix_rt::test]
async fn frames_queued_for_a_late_reader_arrive_whole_and_in_order() {
    let mut s = settings();
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    let server = start(s).await;
    let addr = server.addr();
    let mut late = small_buffer_client(addr).await;
    late.join("mixed").await;
    let mut publisher = connect(addr).await;
    publisher.join("mixed").await;
    let sizes = [3usize, 20_000, 700, 9_000, 1, 16_000, 40];
    let total = 70;
    for i in 0..total {
        let text = char::from(b'a' + (i % 26) as u8)
            .to_string()
            .repeat(sizes[i % sizes.len()]);
        publisher
            .send(json!({"type": "publish", "room": "mixed", "data": text, "id": i}))
            .await;
    }
    publisher.acks(total).await;
    for i in 0..total {
        let v = late.recv().await;
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["offset"].as_u64(), Some(i as u64 + 1), "in order, no gap");
        let data = v["data"].as_str().unwrap();
        assert_eq!(data.len(), sizes[i % sizes.len()], "message {i} whole");
        assert!(
            data.bytes().all(|b| b == b'a' + (i % 26) as u8),
            "message {i} intact"
        );
    }
}

/// A client whose socket has a 4 KiB receive buffer, so the kernel absorbs
/// little of what the server sends while it does not read.
async fn small_buffer_client(addr: std::net::SocketAddr) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut client = Client {
        ws,
        welcome: Value::Null,
    };
    client.welcome = client.recv().await;
    client
}

/// A client that never reads is closed with 1013 once its outbound queue is
/// full; a second client in the room receives every message meanwhile.
#[actix_rt::test]
async fn a_client_that_never_reads_is_closed_with_1013() {
    let mut s = settings();
    s.ws.outbound_max_bytes = 256 * 1024;
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    let server = start(s).await;
    let addr = server.addr();
    let mut slow = small_buffer_client(addr).await;
    slow.join("firehose").await;
    let mut fast = connect(addr).await;
    fast.join("firehose").await;
    let payload = "z".repeat(30_000);
    let total = 400u64;
    let mut received = 0u64;
    for i in 1..=total {
        fast.send(json!({"type": "publish", "room": "firehose", "data": payload, "id": i}))
            .await;
        // Read our own ack and message before the next publish.
        let mut acked = false;
        while !acked || received < i {
            let v = fast.recv().await;
            match v["type"].as_str() {
                Some("ack") => acked = true,
                Some("message") => {
                    received += 1;
                    assert_eq!(v["offset"].as_u64(), Some(received), "in order, no gap");
                }
                _ => panic!("unexpected {v}"),
            }
        }
    }
    assert_eq!(received, total, "the reading client got every message");
    wait_until(
        "the slow-consumer close",
        Duration::from_secs(10),
        || async { metric(&server, "holdfast_ws_slow_consumer_closes_total").await >= 1.0 },
    )
    .await;
    // Reading now, the slow client finds what was queued, then close 1013.
    let mut got = 0u64;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.ws.next())
            .await
            .expect("frames")
        {
            Some(Ok(Message::Text(_))) => got += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)).unwrap_or(0),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame after {got} frames: {other:?}"),
        }
    };
    assert_eq!(code, 1013);
    assert!(
        got < total,
        "the slow client was cut off before the end ({got} frames)"
    );
    let p = fast
        .request(json!({"type": "presence", "room": "firehose"}))
        .await;
    assert_eq!(
        p["members"].as_array().unwrap().len(),
        1,
        "the slow client left the room: {p}"
    );
}

/// In namespaces with `slow_consumer = "latest"` or `"drop_oldest"`, a
/// member that stops reading is not closed: once its queue is full, it
/// loses messages (the oldest, or all but a room's newest) and, reading
/// again, sees offsets that only rise, jump where messages were dropped,
/// and end with the last message published; its connection is open.
#[actix_rt::test]
async fn a_lagging_member_loses_messages_by_its_namespace_policy_and_stays() {
    let mut s = settings();
    s.ws.outbound_max_bytes = 256 * 1024;
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    s.rooms.namespaces = vec![
        NamespaceSettings::new("feed:").slow_consumer(SlowConsumer::Latest),
        NamespaceSettings::new("log:").slow_consumer(SlowConsumer::DropOldest),
    ];
    let server = start(s).await;
    let addr = server.addr();
    let rooms = ["feed:printer", "log:events"];
    let mut slow = small_buffer_client(addr).await;
    let mut fast = connect(addr).await;
    for room in rooms {
        slow.join(room).await;
        fast.join(room).await;
    }
    let payload = "z".repeat(30_000);
    let per_room = 150u64;
    for i in 1..=per_room {
        for room in rooms {
            fast.send(json!({"type": "publish", "room": room, "data": payload, "id": i}))
                .await;
            // Our own ack and message before the next publish.
            let (mut acked, mut echoed) = (false, false);
            while !(acked && echoed) {
                let v = fast.recv().await;
                match v["type"].as_str() {
                    Some("ack") => acked = true,
                    Some("message") if v["room"] == room => {
                        assert_eq!(v["offset"].as_u64(), Some(i), "{room}: in order, no gap");
                        echoed = true;
                    }
                    _ => panic!("unexpected {v}"),
                }
            }
        }
    }
    for policy in ["latest", "drop_oldest"] {
        let series = format!("holdfast_ws_slow_consumer_dropped_total{{policy=\"{policy}\"}}");
        wait_until(
            &format!("messages dropped under {policy}"),
            Duration::from_secs(10),
            || async { metric(&server, &series).await >= 1.0 },
        )
        .await;
    }
    assert_eq!(
        metric(&server, "holdfast_ws_slow_consumer_closes_total").await,
        0.0
    );

    // Reading now: rising offsets with gaps, up to the last message.
    let mut last = [0u64; 2];
    let mut got = [0u64; 2];
    while last != [per_room; 2] {
        let v = slow.recv().await;
        assert_eq!(v["type"], "message", "{v}");
        let r = rooms.iter().position(|room| v["room"] == *room).unwrap();
        let offset = v["offset"].as_u64().unwrap();
        assert!(offset > last[r], "{}: {offset} after {}", rooms[r], last[r]);
        (last[r], got[r]) = (offset, got[r] + 1);
    }
    for r in 0..2 {
        assert!(
            got[r] < per_room,
            "{}: nothing was dropped ({} of {per_room})",
            rooms[r],
            got[r]
        );
    }
    let pong = slow.request(json!({"type": "ping", "id": "after"})).await;
    assert_eq!(
        pong["type"], "pong",
        "the lagging member is still connected: {pong}"
    );
    let history = slow
        .request(json!({"type": "history", "room": "log:events", "since": 0, "limit": per_room, "id": "h"}))
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(per_room as usize),
        "history fills in what was dropped"
    );
}

/// A text message in fragments is one frame (a `ping` in three parts is
/// answered); fragments adding up to more than `max_frame_bytes` close
/// with 1009; text that is not UTF-8, whole or in fragments, with 1007.
#[actix_rt::test]
async fn fragmented_text_is_reassembled_and_text_must_be_utf8() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let fragment = |data: &[u8], opcode: Data, last: bool| {
        Message::Frame(Frame::message(data.to_vec(), OpCode::Data(opcode), last))
    };
    let mut s = settings();
    s.ws.max_frame_bytes = 4000;
    s.ws.max_data_bytes = 4000;
    let server = start(s).await;

    let mut c = connect(server.addr()).await;
    c.send_raw(fragment(br#"{"type":"#, Data::Text, false))
        .await;
    c.send_raw(fragment(br#""ping","#, Data::Continue, false))
        .await;
    c.send_raw(fragment(br#""id":"split"}"#, Data::Continue, true))
        .await;
    let pong = c.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_str()),
        (Some("pong"), Some("split")),
        "{pong}"
    );

    // Each fragment is small; together they pass the bound.
    c.send_raw(fragment(&[b' '; 3000], Data::Text, false)).await;
    c.send_raw(fragment(&[b' '; 3000], Data::Continue, true))
        .await;
    assert_eq!(c.close_code().await, 1009);

    let mut whole = connect(server.addr()).await;
    whole
        .send_raw(fragment(b"{\"type\":\"ping\xff\"}", Data::Text, true))
        .await;
    assert_eq!(whole.close_code().await, 1007);

    let mut split = connect(server.addr()).await;
    split
        .send_raw(fragment(b"{\"type\":\"\xc3", Data::Text, false))
        .await;
    split.send_raw(fragment(b"\"}", Data::Continue, true)).await;
    assert_eq!(split.close_code().await, 1007);
}

/// Past `max_connections` the upgrade is refused with 503; an origin outside
/// the allow-list with 403.
#[actix_rt::test]
async fn connection_limit_and_origin_allow_list() {
    let mut s = settings();
    s.ws.max_connections = 2;
    s.ws.allowed_origins = vec!["https://app.example".into()];
    let server = start(s).await;
    let addr = server.addr();
    let _a = connect(addr).await;
    let _b = try_connect(addr, "", &[("origin", "https://app.example")])
        .await
        .unwrap();
    assert_eq!(try_connect(addr, "", &[]).await.err(), Some(503));
    drop(_a);
    wait_until("a free slot", Duration::from_secs(5), || async {
        try_connect(addr, "", &[("origin", "https://evil.example")])
            .await
            .err()
            == Some(403)
    })
    .await;
}

/// With the default limits, a client that publishes one message at a time,
/// waiting for each ack, runs at full speed and is never limited.
#[actix_rt::test]
async fn a_sequential_publisher_is_not_rate_limited_by_the_defaults() {
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    c.join("steady").await;
    for i in 0..5_000u64 {
        let reply = c
            .request(json!({"type": "publish", "room": "steady", "data": i, "id": i}))
            .await;
        assert_eq!(
            (reply["type"].as_str(), reply["offset"].as_u64()),
            (Some("ack"), Some(i + 1)),
            "{reply}"
        );
    }
    assert_eq!(metric(&server, "holdfast_ws_rate_limited_total").await, 0.0);
}

/// With the default limits, a flood (publishes sent without waiting for
/// their acks) gets `rate_limited` past the burst and then a 1008 close.
#[actix_rt::test]
async fn a_flood_is_rate_limited_then_closed_by_the_defaults() {
    use futures_util::SinkExt;
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    c.join("flood").await;
    for i in 0..2_000u64 {
        let frame = json!({"type": "publish", "room": "flood", "data": i, "id": i});
        if c.ws
            .feed(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break; // the server closed the connection meanwhile
        }
    }
    let _ = c.ws.flush().await;
    let (mut acks, mut limited) = (0u64, 0u64);
    let code = loop {
        let next = tokio::time::timeout(common::ws::FRAME_TIMEOUT, c.ws.next())
            .await
            .expect("a frame or the close within the timeout");
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "ack" {
                    acks += 1;
                } else if v["code"] == "rate_limited" {
                    limited += 1;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1008), "{acks} acks, {limited} rate limited");
    assert!(limited > 0, "{acks} acks, none rate limited");
    assert!(acks < 2_000, "every publish of the flood was acknowledged");
    assert!(metric(&server, "holdfast_ws_rate_limited_total").await >= limited as f64);
}

/// The Origin allow-list fails closed: an Origin that is not text, or a
/// second Origin header besides an allowed one, is refused with 403 before
/// anything else (issue 12 #8).
#[actix_rt::test]
async fn the_origin_allow_list_fails_closed() {
    let mut s = settings();
    s.ws.allowed_origins = vec!["https://good.example".into()];
    let server = start(s).await;
    let url = format!("http://{}/ws", server.addr());
    let client = reqwest::Client::new();
    let status = |origins: Vec<reqwest::header::HeaderValue>| {
        let mut req = client.get(&url);
        for origin in origins {
            req = req.header("origin", origin);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let value = |bytes: &[u8]| reqwest::header::HeaderValue::from_bytes(bytes).unwrap();
    assert_eq!(
        status(vec![value(b"https://\xe9vil.example")]).await,
        403,
        "not UTF-8"
    );
    assert_eq!(
        status(vec![
            value(b"https://good.example"),
            value(b"https://evil.example")
        ])
        .await,
        403,
        "a second Origin"
    );
    assert_eq!(status(vec![value(b"https://evil.example")]).await, 403);
    // The allowed origin alone gets past the check (to the handshake, which
    // this plain GET fails).
    assert_eq!(status(vec![value(b"https://good.example")]).await, 400);
}

/// A client that floods pings and never reads holds at most one pong in
/// its queue (RFC 6455 §5.5.3 lets a pong answer only the latest ping), so
/// control frames cannot grow the server's memory past the outbound bound;
/// the client stays connected (issue 12 #3).
#[actix_rt::test]
async fn a_ping_flood_without_reading_stays_within_the_outbound_bound() {
    let bound = 64 * 1024;
    let mut s = settings();
    s.ws.outbound_max_bytes = bound;
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    let server = start(s).await;
    let addr = server.addr();
    let mut flood = small_buffer_client(addr).await;
    flood.join("flood").await;
    let mut watcher = connect(addr).await;
    watcher.join("flood").await;
    let payload = vec![b'p'; 125];
    for _ in 0..60_000 {
        flood.send_raw(Message::Ping(payload.clone().into())).await;
    }
    // The server read every ping once it handles this publish.
    flood
        .send(json!({"type": "publish", "room": "flood", "data": "done"}))
        .await;
    loop {
        let v = watcher.recv().await;
        if v["type"] == "message" && v["data"] == "done" {
            break;
        }
    }
    wait_until(
        "the outbound queues within the bound",
        Duration::from_secs(10),
        || async { metric(&server, "holdfast_ws_outbound_queue_bytes").await <= bound as f64 },
    )
    .await;
    assert_eq!(
        metric(&server, "holdfast_ws_slow_consumer_closes_total").await,
        0.0
    );
    // Reading now, the flooder finds pongs, its ack and message, then the
    // answer to a request it sends now: still connected.
    flood.send(json!({"type": "ping", "id": "after"})).await;
    loop {
        let v = flood.recv_reply().await;
        if v["type"] == "pong" {
            assert_eq!(v["id"], "after", "{v}");
            break;
        }
    }
}

/// Concurrent upgrades never overshoot `max_connections`: each takes its
/// place atomically before the handshake, and the rest get 503 (issue 12 #6).
#[actix_rt::test]
async fn concurrent_upgrades_stay_within_the_connection_limit() {
    let mut s = settings();
    s.ws.max_connections = 20;
    s.server.workers = 2;
    let server = start(s).await;
    let addr = server.addr();
    let attempts: Vec<_> = (0..80)
        .map(|_| actix_rt::spawn(async move { try_connect(addr, "", &[]).await }))
        .collect();
    let (mut open, mut refused) = (Vec::new(), 0);
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(client) => open.push(client),
            Err(503) => refused += 1,
            Err(other) => panic!("HTTP {other}"),
        }
    }
    assert!(
        open.len() <= 20,
        "{} connections over a limit of 20",
        open.len()
    );
    assert_eq!(open.len() + refused, 80);
    assert!(!open.is_empty());
}

/// Binary frames pay the rate limit like text ones (issue 12 #11): a flood
/// of them is answered `unsupported` at most up to the limit, then closed
/// with 1008, by the defaults.
#[actix_rt::test]
async fn a_binary_flood_is_rate_limited_then_closed() {
    use futures_util::SinkExt;
    let server = start(settings()).await;
    let mut c = connect(server.addr()).await;
    for _ in 0..5_000u64 {
        if c.ws
            .feed(Message::Binary(vec![1, 2, 3].into()))
            .await
            .is_err()
        {
            break; // the server closed the connection meanwhile
        }
    }
    let _ = c.ws.flush().await;
    let mut unsupported = 0u64;
    let code = loop {
        let next = tokio::time::timeout(common::ws::FRAME_TIMEOUT, c.ws.next())
            .await
            .expect("a frame or the close within the timeout");
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["code"] == "unsupported" {
                    unsupported += 1;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1008), "{unsupported} answered");
    assert!(unsupported < 5_000, "{unsupported} answered");
}

/// Client close codes from 3000 to 4999 are one label per range in
/// `holdfast_ws_disconnects_total`, not one series each (issue 12 #13).
#[actix_rt::test]
async fn client_close_codes_do_not_grow_the_metric_labels() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
    let server = start(settings()).await;
    for code in [3001u16, 3999, 4001, 4777] {
        let mut c = connect(server.addr()).await;
        c.ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        c.close_code().await;
    }
    wait_until(
        "the four closes are counted",
        Duration::from_secs(5),
        || async {
            let text = common::metrics_text(&server).await;
            text.contains("holdfast_ws_disconnects_total{code=\"3xxx\"} 2")
                && text.contains("holdfast_ws_disconnects_total{code=\"4xxx\"} 2")
        },
    )
    .await;
    let text = common::metrics_text(&server).await;
    assert!(
        !text.contains("code=\"3001\"") && !text.contains("code=\"4777\""),
        "{text}"
    );
}
