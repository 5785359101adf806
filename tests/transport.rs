//! The transport after the upgrade, through a bare TCP client (see
//! `common::raw`): the connection driver reads frames split across many
//! reads and larger than its read buffer, refuses an oversize frame from
//! its header, handles a client that half-closes and one that stops
//! reading, takes the frames sent with the handshake; and an upgrade
//! request for anything but `/ws` is served by the routes as actix-http
//! would serve it (a streamed answer, an application's own WebSocket).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::raw::{frame, text, upgrade_request, Frame, Raw, FRAME_TIMEOUT};

use common::ws::connect;
use common::{metric, settings, wait_until};
use holdfast::actors::shutdown::ShutdownReason;
use holdfast::server::{Builder, Server, Settings};

async fn start(settings: Settings) -> Server {
    Builder::new(settings).start().await.expect("server starts")
}

/// A join written one byte per write still joins.
#[actix_rt::test]
async fn a_frame_written_a_byte_at_a_time_is_read_whole() {
    let server = start(settings()).await;
    let mut c = Raw::connect(server.addr()).await;
    for byte in text(&json!({"type": "join", "room": "bytes", "id": 1})) {
        c.write(&[byte]).await;
    }
    let joined = c.recv().await;
    assert_eq!(
        (joined["type"].as_str(), joined["id"].as_i64()),
        (Some("joined"), Some(1)),
        "{joined}"
    );
}

/// A 200 KiB publish, many times the read buffer, reaches a member whole.
#[actix_rt::test]
async fn a_frame_larger_than_the_read_buffer_is_read_whole() {
    let mut s = settings();
    s.ws.max_frame_bytes = 512 * 1024;
    s.ws.max_data_bytes = 400 * 1024;
    let server = start(s).await;
    let mut member = connect(server.addr()).await;
    member.join("big").await;
    let mut publisher = Raw::connect(server.addr()).await;
    publisher
        .write(&text(&json!({"type": "join", "room": "big"})))
        .await;
    assert_eq!(publisher.recv().await["type"], "joined");
    let data = "b".repeat(200 * 1024);
    publisher
        .write(&text(
            &json!({"type": "publish", "room": "big", "data": data, "id": 1}),
        ))
        .await;
    // The publisher is a member too: its own message may come first.
    let mut answers = Vec::new();
    while answers.last().is_none_or(|t| t != "ack") {
        answers.push(
            publisher.recv().await["type"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert!(
        answers.iter().all(|t| t == "message" || t == "ack"),
        "{answers:?}"
    );
    let message = member.recv().await;
    assert_eq!(message["data"].as_str().map(str::len), Some(data.len()));
}

/// A frame that announces 1 GiB is refused with 1009 once its header is
/// in, not after the server has buffered what it announced.
#[actix_rt::test]
async fn a_frame_over_the_limit_is_refused_from_its_header() {
    let server = start(settings()).await;
    let mut c = Raw::connect(server.addr()).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend_from_slice(&[b'x'; 100]);
    c.write(&header).await;
    assert_eq!(c.close_code().await, Some(1009));
}

/// A client that shuts its side after a request gets the answer, then the
/// end of the connection, and the server lets the connection go. (A hub's
/// answer still on its way when the client's side ends is not sent: the
/// session ends with the client's stream, as a close would end it.)
#[actix_rt::test]
async fn a_client_that_half_closes_gets_its_answer_then_the_end() {
    let server = start(settings()).await;
    let mut c = Raw::connect(server.addr()).await;
    c.write(&text(&json!({"type": "join", "room": "half", "id": 1})))
        .await;
    assert_eq!(c.recv().await["type"], "joined");
    c.write(&text(&json!({"type": "ping", "id": 2}))).await;
    use tokio::io::AsyncWriteExt;
    c.socket.shutdown().await.expect("half-closed");
    let mut answers = Vec::new();
    while let Some(frame) = c.next().await {
        answers.push(format!("{frame:?}"));
    }
    assert!(
        answers
            .iter()
            .any(|a| a.contains("pong") && a.contains('2')),
        "no pong in {answers:?}"
    );
    wait_until(
        "the connection is let go",
        Duration::from_secs(10),
        || async { metric(&server, "holdfast_ws_connections").await == 0.0 },
    )
    .await;
}

/// A member that stops reading while 4 MB are published to its room: the
/// server's queue holds what the socket does not take (the figure shows
/// it waited for the socket), and once the member reads, it gets every
/// message, in order, none twice.
#[actix_rt::test]
async fn a_member_that_reads_late_gets_every_message_in_order() {
    let server = start(late_settings()).await;
    let mut member = late_member(&server).await;
    read_every_message(&mut member).await;
}

/// A stop waits for the sockets the transport owns: a member that reads
/// late when the server stops still gets all that was queued for it, then
/// `draining` and 1001, and the server stops with 0.
#[actix_rt::test]
async fn a_stop_waits_for_a_member_that_reads_late() {
    let server = start(late_settings()).await;
    let mut member = late_member(&server).await;
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let running = actix_rt::spawn(server.run_until_stopped());
    read_every_message(&mut member).await;
    let draining = member.recv().await;
    assert_eq!(draining["type"], "draining", "{draining}");
    assert_eq!(member.close_code().await, Some(1001));
    assert_eq!(running.await.expect("stopped").exit_code, 0);
}

const LATE_MESSAGES: u64 = 1000;

fn late_settings() -> Settings {
    let mut s = settings();
    s.ws.rate_per_sec = 1e6;
    s.ws.rate_burst = 1e6;
    s.ws.outbound_max_bytes = 64 << 20;
    s.ws.outbound_max_messages = 100_000;
    s
}

/// A member of room `late` with a 4 KiB receive buffer that has not read
/// the [`LATE_MESSAGES`] of 4 KB each published since it joined: the
/// server's queue holds what its socket did not take.
async fn late_member(server: &Server) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr()).await.expect("connect");
    let mut member = Raw::upgrade(stream, &[]).await;
    member
        .write(&text(&json!({"type": "join", "room": "late", "id": 1})))
        .await;
    assert_eq!(member.recv().await["type"], "joined");
    let mut publisher = connect(server.addr()).await;
    publisher.join("late").await;
    let data = "p".repeat(4000);
    for i in 0..LATE_MESSAGES {
        publisher
            .send(json!({"type": "publish", "room": "late", "data": data, "id": i}))
            .await;
    }
    publisher.acks(LATE_MESSAGES as usize).await;
    wait_until(
        "the member's queue holds what its socket did not take",
        Duration::from_secs(10),
        || async { metric(server, "holdfast_ws_outbound_queue_bytes").await > 0.0 },
    )
    .await;
    member
}

/// Reads the [`LATE_MESSAGES`], each once and in order.
async fn read_every_message(member: &mut Raw) {
    for offset in 1..=LATE_MESSAGES {
        let message = member.recv().await;
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(
            message["offset"].as_u64(),
            Some(offset),
            "in order, once each"
        );
    }
}

/// Frames sent in the same write as the upgrade request are handled.
#[actix_rt::test]
async fn frames_sent_with_the_handshake_are_handled() {
    let server = start(settings()).await;
    let ping = text(&json!({"type": "ping", "id": 7}));
    let mut c = Raw::connect_with(server.addr(), &ping).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "id": 7}));
    // A ping control frame is answered with a pong frame.
    c.write(&frame(0x9, b"hi")).await;
    loop {
        match c.next().await {
            Some(Frame::Other(0xa)) => break,
            Some(_) => continue,
            None => panic!("closed before the pong"),
        }
    }
}

/// The routes of the application's own that the tests below mount:
/// `/stream`, whose answer is one chunk and then never ends; `/echo`, a
/// WebSocket of its own (actix-ws) that echoes text; `/reader`, which
/// answers at once and leaves a task reading its request's payload, which
/// sets `read_to_end` when that payload ends.
async fn start_with_own_routes(read_to_end: Arc<AtomicBool>) -> Server {
    use actix_web::{web, HttpRequest, HttpResponse};
    use futures::StreamExt;
    async fn echo(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
        let (res, mut session, mut stream) = actix_ws::handle(&req, body)?;
        actix_rt::spawn(async move {
            while let Some(Ok(actix_ws::Message::Text(text))) = stream.next().await {
                if session.text(text).await.is_err() {
                    break;
                }
            }
        });
        Ok(res)
    }
    Builder::new(settings())
        .mount(move |m| {
            m.routes(move |cfg| {
                let read_to_end = read_to_end.clone();
                cfg.route(
                    "/stream",
                    web::get().to(|| async {
                        let first = futures::stream::once(async {
                            Ok::<_, actix_web::Error>(web::Bytes::from_static(b"first chunk"))
                        });
                        HttpResponse::Ok().streaming(first.chain(futures::stream::pending()))
                    }),
                )
                .route("/echo", web::get().to(echo))
                .route(
                    "/reader",
                    web::get().to(move |mut body: web::Payload| {
                        let read_to_end = read_to_end.clone();
                        async move {
                            actix_rt::spawn(async move {
                                while body.next().await.is_some() {}
                                read_to_end.store(true, Ordering::SeqCst);
                            });
                            HttpResponse::Ok().body("answered")
                        }
                    }),
                );
            });
            Ok(())
        })
        .start()
        .await
        .expect("server starts")
}

/// An upgrade request for a route that streams its answer gets the stream
/// as it comes, not once it ends (this one never does), framed so that an
/// HTTP client reads it.
#[actix_rt::test]
async fn an_upgrade_request_for_a_streaming_route_gets_the_stream_as_it_comes() {
    let server = start_with_own_routes(Arc::default()).await;
    let mut res = reqwest::Client::new()
        .get(format!("http://{}/stream", server.addr()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("an answer");
    assert_eq!(res.status(), 200);
    let chunk = tokio::time::timeout(FRAME_TIMEOUT, res.chunk())
        .await
        .expect("the first chunk within the timeout")
        .expect("a well-framed body");
    assert_eq!(chunk.as_deref(), Some(&b"first chunk"[..]));
}

/// A WebSocket route of the application's own, beside `/ws`, upgrades and
/// talks both ways: only `/ws` is taken over by the transport.
#[actix_rt::test]
async fn a_websocket_route_of_the_application_works_beside_ws() {
    let server = start_with_own_routes(Arc::default()).await;
    let mut c = Raw::send_request(server.addr(), upgrade_request("/echo").as_bytes()).await;
    let head = c.head().await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    c.write(&text(&json!({"echo": 1}))).await;
    match c.next().await {
        Some(Frame::Text(v)) => assert_eq!(v, json!({"echo": 1})),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// Once an upgrade request's answer is written, a reader of its payload
/// sees the end (it is not left waiting on a socket that is gone), and the
/// client sees the connection close after the answer.
#[actix_rt::test]
async fn a_payload_reader_ends_once_the_answer_is_written() {
    let read_to_end = Arc::new(AtomicBool::new(false));
    let server = start_with_own_routes(read_to_end.clone()).await;
    let mut c = Raw::send_request(server.addr(), upgrade_request("/reader").as_bytes()).await;
    let head = c.head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(c.rest().await, b"answered");
    wait_until("the payload's reader saw the end", FRAME_TIMEOUT, || {
        let done = read_to_end.load(Ordering::SeqCst);
        async move { done }
    })
    .await;
}

/// A request pipelined ahead of a `/ws` upgrade gets its answer first,
/// then the 101 and the welcome.
#[actix_rt::test]
async fn a_request_pipelined_ahead_of_an_upgrade_is_answered_first() {
    let server = start(settings()).await;
    let request = format!(
        "GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n{}",
        upgrade_request("/ws")
    );
    let mut c = Raw::send_request(server.addr(), request.as_bytes()).await;
    let first = c.head().await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    c.read_until(b"HTTP/1.1 101").await;
    c.read_until(b"welcome").await;
}

/// An upgrade request for another path is answered by the routes, and the
/// connection then closes: only `/ws` takes a socket over.
#[actix_rt::test]
async fn an_upgrade_request_for_another_path_is_served_by_the_routes() {
    let server = start(settings()).await;
    let mut c = Raw::send_request(server.addr(), upgrade_request("/health/live").as_bytes()).await;
    let head = c.head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = String::from_utf8(c.rest().await).unwrap();
    assert!(body.contains("\"status\""), "{body}");
    let mut c = Raw::send_request(server.addr(), upgrade_request("/nowhere").as_bytes()).await;
    let head = c.head().await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&c.rest().await).expect("a JSON body");
    assert_eq!(body["code"], "not_found", "{body}");
}
