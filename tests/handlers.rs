//! The application layer through real WebSocket clients: RPC handlers and
//! room handlers (PROTOCOL.md, "Additions to v1"), their errors, deadlines
//! and crashes, and the namespace options.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use holdfast::prelude::*;
use holdfast::server::config::NamespaceSettings;
use holdfast::server::handlers::{
    Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection, Rpc,
};
use serde_json::{json, Value};

use common::ws::{connect, Client};
use common::{settings, wait_until};

const SECRET: &str = "handlers-test-secret-0123456789";

/// What a handler was told, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Answers `echo.*`: who called, sums, refusals, a slow answer, a panic.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Child for Echo {}

#[derive(serde::Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

impl Handler<Rpc> for Echo {
    type Result = ResponseFuture<Result<Value, Rejection>>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        let answer = match rpc.action("echo.") {
            "who" => Ok(json!({
                "method": rpc.method,
                "session": &*rpc.caller.session,
                "user": &*rpc.caller.user,
                "team": rpc.caller.claim("team"),
                "data": rpc.data,
            })),
            "sum" => rpc.params::<Sum>().map(|s| json!(s.a + s.b)),
            "busy" => Err(Rejection::new(
                "printer_busy",
                "mk4 is printing; pause it first",
            )),
            "badcode" => Err(Rejection::new("Not A Code", "the handler's bug")),
            "crash" => panic!("echo.crash asked for a panic"),
            // Never answers: the deadline decides.
            "slow" => return Box::pin(std::future::pending()),
            other => Err(Rejection::new(
                "no_such_action",
                format!("no action '{other}'"),
            )),
        };
        Box::pin(async move { answer })
    }
}

/// Answers `echo.deep.*`: the longer prefix wins over `echo.`.
struct Deep;

impl Actor for Deep {
    type Context = Context<Self>;
}

impl Child for Deep {}

impl Handler<Rpc> for Deep {
    type Result = Result<Value, Rejection>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        Ok(json!({"deep": rpc.method}))
    }
}

/// Moderates `chat:` rooms: refuses banned users and `chat:closed`,
/// welcomes others with data, refuses spam, rewrites `{"shout":…}`,
/// panics on `"crash"`, records leaves.
struct Moderator {
    log: Log,
}

impl Actor for Moderator {
    type Context = Context<Self>;
}

impl Child for Moderator {}

impl Handler<JoinRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, req: JoinRequest, _: &mut Context<Self>) -> Self::Result {
        self.log
            .push(format!("join {} {}", req.room, req.caller.user));
        if req.caller.user.starts_with("banned") {
            return Err(Rejection::forbidden("you are banned"));
        }
        match req.room.as_str() {
            "chat:closed" => Err(Rejection::new("room_closed", "this chat is closed")),
            "chat:plain" => Ok(Accept::AsSent),
            room => Ok(Accept::With(json!({"rules": "be kind", "room": room}))),
        }
    }
}

impl Handler<PublishRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, req: PublishRequest, _: &mut Context<Self>) -> Self::Result {
        let data: Value = req.parse()?;
        if data == json!("crash") {
            panic!("the moderator was asked to crash");
        }
        if data.as_str().is_some_and(|t| t.contains("spam")) {
            return Err(Rejection::new("banned_word", "no spam here"));
        }
        if let Some(shout) = data.get("shout").and_then(Value::as_str) {
            return Ok(Accept::With(json!(shout.to_uppercase())));
        }
        Ok(Accept::AsSent)
    }
}

impl Handler<LeaveNotice> for Moderator {
    type Result = ();

    fn handle(&mut self, note: LeaveNotice, _: &mut Context<Self>) {
        let how = if note.disconnected {
            "disconnected"
        } else {
            "left"
        };
        self.log
            .push(format!("{how} {} {}", note.room, note.caller.user));
    }
}

fn app_settings() -> Settings {
    let mut s = settings();
    // Long enough for a panic (and its backtrace, on a loaded CI machine)
    // to be seen as the handler stopping (`unavailable`), not as a timeout.
    s.handlers.timeout_ms = 2500;
    s.supervision.backoff_min_ms = 10;
    s.supervision.backoff_max_ms = 50;
    s.rooms.namespaces = vec![
        NamespaceSettings::new("chat:").handler("moderator"),
        NamespaceSettings {
            client_publish: false,
            ..NamespaceSettings::new("news:")
        },
        NamespaceSettings {
            presence: false,
            ..NamespaceSettings::new("hidden:")
        },
    ];
    s
}

async fn start(settings: Settings, log: &Log) -> Server {
    let log = log.clone();
    Builder::new(settings)
        .rpc("echo.", ChildSpec::new("echo", |_| Echo))
        .rpc("echo.deep.", ChildSpec::new("deep", |_| Deep))
        .room_handler(
            "moderator",
            ChildSpec::new("moderator", move |_| Moderator { log: log.clone() }),
        )
        .start()
        .await
        .expect("server starts")
}

async fn connect_as(server: &Server, sub: &str, extra: Value) -> Client {
    common::ws::connect_as(server.addr(), SECRET, sub, extra).await
}

/// Sends `frame(id)` with a new id until the answer is something other
/// than `unavailable` (a handler restarting answers that), within 10 s;
/// answers that reply. Each round trip is the poll: no sleep.
async fn until_available(c: &mut Client, frame: impl Fn(u64) -> Value) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for id in 100.. {
        let reply = c.request(frame(id)).await;
        if reply["code"] != "unavailable" {
            return reply;
        }
        assert_error(&reply, json!(id), "unavailable");
        assert!(
            std::time::Instant::now() < deadline,
            "still unavailable after 10 s: {reply}"
        );
    }
    unreachable!("ids run out before the deadline")
}

fn assert_error(reply: &Value, id: Value, code: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
}

/// An `rpc` reaches the handler of the longest matching prefix with the
/// caller's session, user and custom claims; its `data` comes back in
/// `reply` with the same id; `data` absent is `null`.
#[actix_rt::test]
async fn rpc_is_answered_by_the_longest_prefix_with_the_callers_identity() {
    let mut s = app_settings();
    s.auth.jwt_secret = serde_json::from_value(json!(SECRET)).unwrap();
    let server = start(s, &Log::default()).await;
    let mut c = connect_as(&server, "u-7", json!({"team": "blue"})).await;
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.who", "data": {"x": [1, 2]}, "id": 7}))
        .await;
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(reply["id"], 7);
    assert_eq!(
        reply["data"],
        json!({"method": "echo.who", "session": c.session(), "user": "u-7", "team": "blue", "data": {"x": [1, 2]}})
    );
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.who", "id": "s"}))
        .await;
    assert_eq!(
        (reply["id"].clone(), reply["data"]["data"].clone()),
        (json!("s"), Value::Null)
    );
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.deep.dive", "id": 8}))
        .await;
    assert_eq!(reply["data"], json!({"deep": "echo.deep.dive"}), "{reply}");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.sum", "data": {"a": 2, "b": 40}, "id": 9}))
        .await;
    assert_eq!(reply["data"], 42, "{reply}");
}

/// Every way an `rpc` fails is an `error` with the request's id, and the
/// connection stays open: no handler, a bad or missing field, the `rpc`
/// claim, the application's own code, a code the protocol does not allow,
/// a handler's `bad_request`.
#[actix_rt::test]
async fn rpc_failures_are_errors_and_the_connection_stays_open() {
    let mut s = app_settings();
    s.auth.jwt_secret = serde_json::from_value(json!(SECRET)).unwrap();
    let server = start(s, &Log::default()).await;
    let mut c = connect_as(
        &server,
        "u-1",
        json!({"rpc": ["echo.busy", "echo.badcode", "echo.sum", "nobody.*"]}),
    )
    .await;
    let reply = c
        .request(json!({"type": "rpc", "method": "nobody.home", "id": 1}))
        .await;
    assert_error(&reply, json!(1), "unknown_method");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.who", "id": 2}))
        .await;
    assert_error(&reply, json!(2), "forbidden");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.busy", "id": 3}))
        .await;
    assert_error(&reply, json!(3), "printer_busy");
    assert_eq!(reply["message"], "mk4 is printing; pause it first");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.badcode", "id": 4}))
        .await;
    assert_error(&reply, json!(4), "handler_error");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.sum", "data": {"a": "x"}, "id": 5}))
        .await;
    assert_error(&reply, json!(5), "bad_request");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.sum"}))
        .await;
    assert_error(&reply, Value::Null, "bad_request");
    assert!(
        reply["message"].as_str().unwrap().contains("`id`"),
        "{reply}"
    );
    let reply = c
        .request(json!({"type": "rpc", "method": "a b", "id": 6}))
        .await;
    assert_error(&reply, json!(6), "bad_request");
    assert!(
        reply["message"].as_str().unwrap().contains("`method`"),
        "{reply}"
    );
    let reply = c.request(json!({"type": "rpc", "id": 10})).await;
    assert_error(&reply, json!(10), "bad_request");
    assert_eq!(
        c.request(json!({"type": "ping", "id": 11})).await["type"],
        "pong"
    );
}

/// A handler that does not answer within `handlers.timeout_ms` gets the
/// client `timeout`; one that panics gets it `unavailable`; the client
/// stays connected, and once the handler is restarted it answers again.
#[actix_rt::test]
async fn rpc_to_a_slow_or_crashing_handler_is_timeout_or_unavailable_then_served_again() {
    let server = start(app_settings(), &Log::default()).await;
    let mut c = connect(server.addr()).await;
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.slow", "id": 1}))
        .await;
    assert_error(&reply, json!(1), "timeout");
    let reply = c
        .request(json!({"type": "rpc", "method": "echo.crash", "id": 2}))
        .await;
    assert_error(&reply, json!(2), "unavailable");
    // Served again by the next incarnation (while it restarts: unavailable).
    let answered = until_available(
        &mut c,
        |id| json!({"type": "rpc", "method": "echo.sum", "data": {"a": 1, "b": 1}, "id": id}),
    )
    .await;
    assert_eq!(
        answered["type"], "reply",
        "the handler came back: {answered}"
    );
    assert_eq!(answered["data"], 2);
    let (_, _, echo) = common::get(&server, "/health/echo").await;
    assert!(echo["restarts"].as_u64().unwrap() >= 1, "{echo}");
}

/// A room handler decides on joins: a refusal (its own code, or the
/// default `forbidden`) leaves no membership, an acceptance may carry
/// `data` in `joined`; a `resume` into its rooms asks it again.
#[actix_rt::test]
async fn a_room_handler_accepts_or_rejects_joins() {
    let mut s = app_settings();
    s.auth.jwt_secret = serde_json::from_value(json!(SECRET)).unwrap();
    let log = Log::default();
    let server = start(s, &log).await;
    let mut ada = connect_as(&server, "ada", json!({})).await;
    let joined = ada.join("chat:7").await;
    assert_eq!(
        joined["data"],
        json!({"rules": "be kind", "room": "chat:7"})
    );
    assert_eq!(joined["id"], "j-chat:7");
    let plain = ada.join("chat:plain").await;
    assert!(plain.get("data").is_none(), "{plain}");
    let unmoderated = ada.join("lobby").await;
    assert!(unmoderated.get("data").is_none(), "{unmoderated}");

    let reply = ada
        .request(json!({"type": "join", "room": "chat:closed", "id": 1}))
        .await;
    assert_error(&reply, json!(1), "room_closed");
    let mut banned = connect_as(&server, "banned-bob", json!({})).await;
    let reply = banned
        .request(json!({"type": "join", "room": "chat:7", "id": 2}))
        .await;
    assert_error(&reply, json!(2), "forbidden");
    // No membership: publishing is not_member, and presence shows ada alone.
    let reply = banned
        .request(json!({"type": "publish", "room": "chat:7", "data": "hi", "id": 3}))
        .await;
    assert_error(&reply, json!(3), "not_member");
    let presence = ada
        .request(json!({"type": "presence", "room": "chat:7", "id": 4}))
        .await;
    assert_eq!(presence["members"], json!([{"user": "ada", "sessions": 1}]));
    // Resuming into the room asks the handler again.
    let reply = banned
        .request(
            json!({"type": "resume", "session": banned.session(), "rooms": {"chat:7": 0}, "id": 5}),
        )
        .await;
    assert_error(&reply, json!(5), "forbidden");
    let presence = ada
        .request(json!({"type": "presence", "room": "chat:7", "id": 6}))
        .await;
    assert_eq!(presence["members"], json!([{"user": "ada", "sessions": 1}]));
    assert!(log.lines().contains(&"join chat:7 banned-bob".to_owned()));
    assert!(
        !log.lines().iter().any(|l| l.contains("lobby")),
        "{:?}",
        log.lines()
    );
}

/// A room handler decides on publishes: accepted as sent, accepted with
/// replaced data (what members and history get), rejected (the publisher
/// gets the error; nobody gets a message; no offset is taken).
#[actix_rt::test]
async fn a_room_handler_accepts_rewrites_or_rejects_publishes_and_offsets_stay_gapless() {
    let server = start(app_settings(), &Log::default()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    a.join("chat:1").await;
    b.join("chat:1").await;
    let ack = a
        .request(json!({"type": "publish", "room": "chat:1", "data": "hello", "id": 1}))
        .await;
    assert_eq!(
        (ack["type"].clone(), ack["offset"].clone()),
        (json!("ack"), json!(1)),
        "{ack}"
    );
    let reply = a
        .request(json!({"type": "publish", "room": "chat:1", "data": "buy spam", "id": 2}))
        .await;
    assert_error(&reply, json!(2), "banned_word");
    let ack = a
        .request(json!({"type": "publish", "room": "chat:1", "data": {"shout": "hey"}, "id": 3}))
        .await;
    assert_eq!(ack["offset"], 2, "{ack}");
    let first = b.recv().await;
    let second = b.recv().await;
    assert_eq!(
        (first["offset"].clone(), first["data"].clone()),
        (json!(1), json!("hello"))
    );
    assert_eq!(
        (second["offset"].clone(), second["data"].clone()),
        (json!(2), json!("HEY"))
    );
    // A late joiner's history has the rewritten message, never the spam.
    let mut late = connect(server.addr()).await;
    late.send(
        json!({"type": "resume", "session": late.session(), "rooms": {"chat:1": 0}, "id": 4}),
    )
    .await;
    let replayed = [late.recv().await, late.recv().await];
    let data: Vec<&Value> = replayed.iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!("hello"), &json!("HEY")], "{replayed:?}");
    let resumed = late.recv().await;
    assert_eq!(resumed["rooms"]["chat:1"]["replayed"], 2, "{resumed}");
}

/// A handler is told of leaves and disconnects, and cannot refuse them.
#[actix_rt::test]
async fn a_room_handler_is_told_of_leaves_and_disconnects() {
    let mut s = app_settings();
    s.auth.jwt_secret = serde_json::from_value(json!(SECRET)).unwrap();
    let log = Log::default();
    let server = start(s, &log).await;
    let mut c = connect_as(&server, "cy", json!({})).await;
    c.join("chat:a").await;
    c.join("chat:b").await;
    let left = c
        .request(json!({"type": "leave", "room": "chat:a", "id": 1}))
        .await;
    assert_eq!(left["type"], "left");
    drop(c);
    wait_until(
        "the handler hears of the disconnect",
        Duration::from_secs(5),
        || {
            let lines = log.lines();
            async move { lines.contains(&"disconnected chat:b cy".to_owned()) }
        },
    )
    .await;
    let lines = log.lines();
    assert!(lines.contains(&"left chat:a cy".to_owned()), "{lines:?}");
    assert!(
        !lines.contains(&"disconnected chat:a cy".to_owned()),
        "{lines:?}"
    );
}

/// A room handler that panics mid-stream: the publisher gets `unavailable`,
/// every client stays connected, service resumes once it is restarted, and
/// the offsets members see have no gap.
#[actix_rt::test]
async fn a_room_handler_crash_mid_stream_is_unavailable_then_service_resumes_gapless() {
    let server = start(app_settings(), &Log::default()).await;
    let mut a = connect(server.addr()).await;
    let mut b = connect(server.addr()).await;
    a.join("chat:live").await;
    b.join("chat:live").await;
    for i in 1..=3 {
        let ack = a
            .request(json!({"type": "publish", "room": "chat:live", "data": i, "id": i}))
            .await;
        assert_eq!(ack["offset"], i, "{ack}");
    }
    let reply = a
        .request(json!({"type": "publish", "room": "chat:live", "data": "crash", "id": 99}))
        .await;
    assert_error(&reply, json!(99), "unavailable");
    let reply = until_available(
        &mut a,
        |id| json!({"type": "publish", "room": "chat:live", "data": "after", "id": id}),
    )
    .await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert_eq!(reply["offset"].as_u64(), Some(4));
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let m = b.recv().await;
        seen.push(m["offset"].as_u64().unwrap());
    }
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(
        b.request(json!({"type": "ping", "id": 1})).await["type"],
        "pong"
    );
}

/// Namespace options: `client_publish = false` refuses clients' publishes
/// (`$` rooms too); `presence = false` refuses `presence`; `presence`
/// honours the token's `rooms` claim; `data` nested deeper than 64 is
/// `bad_request`.
#[actix_rt::test]
async fn namespace_options_and_limits_are_enforced() {
    let mut s = app_settings();
    s.auth.jwt_secret = serde_json::from_value(json!(SECRET)).unwrap();
    let server = start(s, &Log::default()).await;
    let mut c = connect_as(
        &server,
        "dee",
        json!({"rooms": ["news:*", "hidden:*", "lobby"]}),
    )
    .await;
    c.join("news:1").await;
    let reply = c
        .request(json!({"type": "publish", "room": "news:1", "data": 1, "id": 1}))
        .await;
    assert_error(&reply, json!(1), "forbidden");
    let reply = c
        .request(json!({"type": "publish", "room": "$trending", "data": 1, "id": 2}))
        .await;
    assert_error(&reply, json!(2), "forbidden");
    c.join("hidden:1").await;
    let reply = c
        .request(json!({"type": "presence", "room": "hidden:1", "id": 3}))
        .await;
    assert_error(&reply, json!(3), "forbidden");
    let reply = c
        .request(json!({"type": "presence", "room": "secret", "id": 4}))
        .await;
    assert_error(&reply, json!(4), "forbidden");
    let presence = c
        .request(json!({"type": "presence", "room": "news:1", "id": 5}))
        .await;
    assert_eq!(presence["members"], json!([{"user": "dee", "sessions": 1}]));

    c.join("lobby").await;
    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let frame = format!(r#"{{"type":"publish","room":"lobby","data":{deep},"id":6}}"#);
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
        .await;
    assert_error(&c.recv_reply().await, json!(6), "bad_request");
    let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let frame = format!(r#"{{"type":"publish","room":"lobby","data":{ok},"id":7}}"#);
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(frame.into()))
        .await;
    assert_eq!(c.recv_reply().await["type"], "ack");
}

/// Namespaces come from the builder as well as from the config file, and
/// are checked the same way: a bad prefix is a config error naming its key
/// (exit 64 for a binary), before any port is taken.
#[actix_rt::test]
async fn namespaces_from_the_builder_apply_and_are_checked() {
    use holdfast::server::config::NamespaceSettings;
    let mut read_only = NamespaceSettings::new("news:");
    read_only.client_publish = false;
    let server = Builder::new(common::settings())
        .namespace(read_only)
        .start()
        .await
        .expect("server starts");
    let mut c = connect(server.addr()).await;
    c.join("news:1").await;
    let refused = c
        .request(json!({"type": "publish", "room": "news:1", "data": 1, "id": 1}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    let bad = Builder::new(common::settings())
        .namespace(NamespaceSettings::new("no spaces"))
        .start()
        .await;
    let Err(e) = bad else {
        panic!("a bad prefix from the builder started");
    };
    assert_eq!(e.exit_code(), 64, "{e}");
    assert!(e.to_string().contains("rooms.namespaces[0].prefix"), "{e}");
}
