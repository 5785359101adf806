//! Trace export: the real binary posts OTLP/HTTP spans to a collector (a
//! small one here, that decodes what it receives), with the parent/child
//! links a trace viewer shows, and an incoming `traceparent` honoured.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, Server};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    service: String,
}

/// A collector on a free port: every `POST /v1/traces` is decoded and its
/// spans kept.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || serve(stream, &sink));
            }
        });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span named `name` whose attribute `key` is `value` came.
    fn wait_for(&self, name: &str, key: &str, value: &str) -> Received {
        let mut found = None;
        wait_until(
            &format!("a `{name}` span with {key}={value}"),
            Duration::from_secs(20),
            || {
                found = self.spans().into_iter().find(|s| {
                    s.name == name && s.attributes.get(key).map(String::as_str) == Some(value)
                });
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// The one span whose parent is `parent`, named `name`.
    fn child(&self, parent: &Received, name: &str) -> Received {
        let mut found = None;
        wait_until(
            &format!("a `{name}` child of `{}`", parent.name),
            Duration::from_secs(20),
            || {
                found = self
                    .spans()
                    .into_iter()
                    .find(|s| s.name == name && s.parent_span_id == parent.span_id);
                found.is_some()
            },
        );
        let child = found.unwrap();
        assert_eq!(child.trace_id, parent.trace_id, "{child:?} in {parent:?}");
        child
    }
}

/// Answers HTTP/1.1 requests on one connection (the exporter keeps it alive).
fn serve(stream: TcpStream, sink: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let length = head
            .iter()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let status = if head[0].starts_with("POST /v1/traces ") {
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("an OTLP protobuf export");
            let spans = received(request);
            sink.lock().unwrap().extend(spans);
            "200 OK"
        } else {
            "404 Not Found"
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn received(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(text)
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Received {
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv)))
                    .collect(),
                service: service.clone(),
            });
        }
    }
    out
}

const API_KEY: &str = "telemetry-test-api-key";

fn start(collector: &Collector) -> Server {
    Server::start(&[
        ("HOLDFAST__TELEMETRY__OTLP_ENDPOINT", &collector.url),
        ("HOLDFAST__TELEMETRY__SERVICE_NAME", "holdfast-under-test"),
        ("HOLDFAST__API__KEY", API_KEY),
        // Spans go out within 100 ms of their end instead of 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
}

/// The next frames of the types in `kinds`, in whatever order they come
/// (a publisher's `ack` and its own `message` are not ordered), by type;
/// fails after 20 s (pings keep coming, so a read timeout alone would not
/// end the wait).
fn read_kinds(
    ws: &mut tungstenite::WebSocket<TcpStream>,
    kinds: &[&str],
) -> HashMap<String, Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut got = HashMap::new();
    while got.len() < kinds.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {kinds:?} frames within 20 s, only {got:?}"
        );
        if let Message::Text(t) = ws.read().expect("a frame") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if let Some(kind) = kinds.iter().find(|k| v["type"] == **k) {
                got.entry(kind.to_string()).or_insert(v);
            }
        }
    }
    got
}

fn read_until(ws: &mut tungstenite::WebSocket<TcpStream>, kind: &str) -> Value {
    read_kinds(ws, &[kind]).remove(kind).unwrap()
}

/// A WebSocket client whose every step is bounded: the connect, the
/// handshake and each read fail after 20 s instead of hanging the test.
fn ws_connect(
    addr: &str,
    request: tungstenite::handshake::client::Request,
) -> tungstenite::WebSocket<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(20))
        .expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    tungstenite::client(request, tcp).expect("upgrade").0
}

fn send(ws: &mut tungstenite::WebSocket<TcpStream>, frame: Value) {
    ws.send(Message::text(frame.to_string())).unwrap();
}

/// HTTP requests, a WebSocket session, a client's publish and the server
/// API's publish, each through the hub to the fan-out, as one trace each
/// with the caller's `traceparent` at its root; the session's own span is
/// exported at the shutdown, and the process still exits 0.
#[test]
fn spans_reach_the_collector_with_their_parents() {
    let collector = Collector::start();
    let mut server = start(&collector);
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{caller_trace}-{caller_span}-01");

    // A plain request, the child of the caller's span.
    holdfast_actors::tls::install_default_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{}/health/live", server.addr))
        .header("traceparent", &traceparent)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let health = collector.wait_for("GET /health/live", "http.route", "/health/live");
    assert_eq!(health.trace_id, caller_trace);
    assert_eq!(health.parent_span_id, caller_span);
    assert_eq!(health.service, "holdfast-under-test");
    assert_eq!(health.attributes["http.request.method"], "GET");
    assert_eq!(health.attributes["http.response.status_code"], "200");

    // A WebSocket session whose upgrade carries another trace.
    let ws_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = format!("ws://{}/ws", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "traceparent",
        format!("00-{ws_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let mut ws = ws_connect(&server.addr, request);
    let session = read_until(&mut ws, "welcome")["session"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&mut ws, json!({"type": "join", "room": "traced", "id": 1}));
    read_until(&mut ws, "joined");
    send(
        &mut ws,
        json!({"type": "publish", "room": "traced", "data": {"n": 1}, "id": 2}),
    );
    let frames = read_kinds(&mut ws, &["ack", "message"]);
    assert_eq!(frames["ack"]["offset"], 1);
    assert_eq!(frames["message"]["offset"], 1);

    let publish = collector.wait_for("ws.publish", "room", "traced");
    assert_eq!(publish.trace_id, ws_trace);
    assert_eq!(publish.attributes["offset"], "1");
    let hub = collector.child(&publish, "room.publish");
    let deliver = collector.child(&hub, "room.deliver");
    assert_eq!(deliver.attributes["members"], "1");
    let fanout = collector.child(&deliver, "ws.fanout");
    assert_eq!(fanout.attributes["connections"], "1");

    // The server API's publish: the request's span is the hub's parent.
    let api_trace = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
    let res = client
        .post(format!("http://{}/api/v1/publish", server.addr))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{api_trace}-1111111111111111-01"))
        .json(&json!({"room": "traced", "data": {"n": 2}}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    read_until(&mut ws, "message");
    let api = collector.wait_for("POST /api/v1/publish", "http.route", "/api/v1/publish");
    assert_eq!(api.trace_id, api_trace);
    assert_eq!(api.parent_span_id, "1111111111111111");
    let hub = collector.child(&api, "room.publish");
    let deliver = collector.child(&hub, "room.deliver");
    collector.child(&deliver, "ws.fanout");
    // The API key is never an attribute.
    for span in collector.spans() {
        for value in span.attributes.values() {
            assert!(!value.contains(API_KEY), "{span:?}");
        }
    }

    // The session's span ends with the connection; the shutdown exports it.
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(15)), 0);
    let spans = collector.spans();
    let ws_session = spans
        .iter()
        .find(|s| s.name == "ws.session" && s.attributes["session"] == session)
        .unwrap_or_else(|| panic!("the session's span, exported at the exit: {spans:?}"));
    assert_eq!(ws_session.trace_id, ws_trace);
    assert_eq!(ws_session.attributes["ws.close_code"], "1000");
    assert_eq!(publish.parent_span_id, ws_session.span_id);
    let upgrade = spans
        .iter()
        .find(|s| s.span_id == ws_session.parent_span_id)
        .expect("the upgrade request's span");
    assert_eq!(upgrade.name, "GET /ws");
    assert_eq!(upgrade.parent_span_id, "b7ad6b7169203331");
    assert_eq!(upgrade.attributes["http.response.status_code"], "101");
}

/// A collector that is down costs the server nothing it serves: requests
/// are answered, the exporter's failures are logged, and the shutdown's
/// wait for the last export is bounded.
#[test]
fn a_collector_that_is_down_changes_nothing_served() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut server = Server::start(&[
        ("HOLDFAST__TELEMETRY__OTLP_ENDPOINT", &url),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]);
    for _ in 0..20 {
        assert_eq!(server.get("/health/live").0, 200);
    }
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(15)), 0);
    let log = server.lines.lock().unwrap().join("\n");
    assert!(!log.contains("panic"), "{log}");
}
