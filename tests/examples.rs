//! The examples in `examples/`, run end to end as the processes a user
//! would run (`cargo test` builds them first), through real clients.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::wait_until;
use common::ws::try_connect;

/// `target/<profile>/examples/<name>`, next to this test's own binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is not built: `cargo test` builds the examples",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A config file for the chat on `port`, with a database of its own.
fn chat_config(dir: &std::path::Path, port: u16, app: &str) -> PathBuf {
    let path = dir.join("chat.toml");
    let toml = format!(
        r#"
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "sqlite://{db}"

[[rooms.namespaces]]
prefix = "chat:"
handler = "moderator"
presence_events = true

[app]
{app}
"#,
        db = dir.join("chat.db").display()
    );
    std::fs::write(&path, toml).expect("config written");
    path
}

fn run(args: &[&str]) -> Child {
    Command::new(example("moderated_chat"))
        .args(args)
        .env_remove("HOLDFAST_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts")
}

/// The moderated chat as its own binary: it serves with its `[app]`
/// settings, its room handler refuses a banned word and trims the rest and
/// stores it in the database, its RPC answers, members see each other join
/// and read history, and SIGTERM stops it with exit 0.
#[actix_rt::test]
async fn the_moderated_chat_serves_moderates_and_stops_on_sigterm() {
    // No server in this process installs one for reqwest.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = chat_config(dir.path(), port, r#"banned_words = ["spam"]"#);
    let mut child = run(&["--config", config.to_str().unwrap(), "serve"]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(
        "the chat is ready",
        Duration::from_secs(30),
        || async move {
            reqwest::get(format!("http://{addr}/health/ready"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    let mut c = try_connect(addr, "", &[]).await.expect("upgrade");
    let joined = c.join("chat:1").await;
    assert_eq!(
        joined["data"],
        json!({"rules": "no banned words", "room": "chat:1"})
    );
    let refused = c
        .request(json!({"type": "publish", "room": "chat:1", "data": "buy SPAM now", "id": 1}))
        .await;
    assert_eq!(refused["code"], "banned_word", "{refused}");
    c.send(json!({"type": "publish", "room": "chat:1", "data": "  hello  ", "id": 2}))
        .await;
    // The ack and the message, in either order (and our own presence_diff).
    let (mut ack, mut message) = (Value::Null, Value::Null);
    while ack.is_null() || message.is_null() {
        let v = c.recv().await;
        match v["type"].as_str() {
            Some("ack") => ack = v,
            Some("message") => message = v,
            _ => {}
        }
    }
    assert_eq!(
        ack["offset"], 1,
        "the refused message took no offset: {ack}"
    );
    assert_eq!(message["offset"], 1, "{message}");
    assert_eq!(message["data"], "hello");
    let stats = c
        .request(json!({"type": "rpc", "method": "moderation.stats", "id": 3}))
        .await;
    assert_eq!(stats["data"], json!({"passed": 1}), "{stats}");

    // The moderator stored it through Holdfast's pool.
    let db = dir.path().join("chat.db");
    let me = c.user();
    wait_until("the message is stored", Duration::from_secs(10), || {
        let (db, me) = (db.clone(), me.clone());
        async move { stored(&db) == [("chat:1".to_owned(), me, "hello".to_owned())] }
    })
    .await;
    let recent = c
        .request(json!({"type": "rpc", "method": "moderation.recent", "data": {"room": "chat:1"}, "id": 4}))
        .await;
    assert_eq!(recent["data"]["messages"][0]["body"], "hello", "{recent}");
    assert_eq!(recent["data"]["messages"][0]["user"], c.user(), "{recent}");

    // Someone else joins: the first member hears of it, and the newcomer
    // reads what it missed.
    let mut other = try_connect(addr, "", &[]).await.expect("upgrade");
    other.join("chat:1").await;
    loop {
        let v = c.recv().await;
        let joined = |user: &str| {
            v["joins"]
                .as_array()
                .is_some_and(|j| j.iter().any(|e| e["user"] == user))
        };
        if v["type"] == "presence_diff" && joined(&other.user()) {
            break;
        }
    }
    let history = other
        .request(json!({"type": "history", "room": "chat:1", "id": 5}))
        .await;
    assert_eq!(
        history["messages"],
        json!([{"offset": 1, "from": c.user(), "data": "hello"}]),
        "{history}"
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(c.close_code().await, 1001);
    let status = child.wait().expect("the chat exits");
    assert_eq!(status.code(), Some(0));
}

/// The rows of `chat_messages` in the SQLite file `db`: (room, user, body).
fn stored(db: &std::path::Path) -> Vec<(String, String, String)> {
    use diesel::prelude::*;
    diesel::table! {
        chat_messages (id) {
            id -> Text,
            room -> Text,
            user_id -> Text,
            body -> Text,
            at_ms -> BigInt,
        }
    }
    let Ok(mut conn) = SqliteConnection::establish(&db.display().to_string()) else {
        return Vec::new();
    };
    chat_messages::table
        .select((
            chat_messages::room,
            chat_messages::user_id,
            chat_messages::body,
        ))
        .load(&mut conn)
        .unwrap_or_default()
}

/// The example keeps every subcommand: `config` shows its `[app]` table,
/// and an `[app]` its type refuses is exit 64 naming the key.
#[test]
fn the_moderated_chat_has_every_subcommand_and_checks_its_app_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = chat_config(dir.path(), free_port(), r#"banned_words = ["spam"]"#);
    let out = run(&["--config", config.to_str().unwrap(), "config"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("banned_words = [\"spam\"]"), "{shown}");

    let config = chat_config(dir.path(), free_port(), r#"banned_wrds = ["spam"]"#);
    let out = run(&["--config", config.to_str().unwrap(), "serve"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("app") && said.contains("banned_wrds"),
        "{said}"
    );
}

/// Runs the backend example with `key` and `stdin`, off the test's event
/// loop (the server under test runs on it); answers (exit code, stdout, stderr).
async fn publish_lines(
    addr: std::net::SocketAddr,
    key: &str,
    room: &str,
    stdin: &str,
) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(example("backend_publisher"))
        .arg(room)
        .env("HOLDFAST_URL", format!("http://{addr}"))
        .env("HOLDFAST_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A backend publishes through the server API: a client in the room gets
/// each line as a message from `backend`, with the offset the backend was
/// told; a wrong key is refused (exit 69, the 401 shown, the key not);
/// a line that is not JSON stops it (exit 65).
#[actix_rt::test]
async fn a_backend_publishes_through_the_server_api() {
    const KEY: &str = "backend-example-key-0123456789";
    let mut s = common::settings();
    s.api.key = holdfast::server::config::Secret::new(KEY);
    let server = holdfast::server::Builder::new(s)
        .start()
        .await
        .expect("server starts");
    let mut member = try_connect(server.addr(), "", &[]).await.expect("upgrade");
    member.join("orders:42").await;

    let lines = "{\"status\":\"paid\"}\n\n{\"status\":\"shipped\"}\n";
    let (code, out, err) = publish_lines(server.addr(), KEY, "orders:42", lines).await;
    assert_eq!(code, 0, "{err}");
    let acks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        acks.iter().map(|a| a["offset"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2)],
        "{out}"
    );
    for (ack, status) in acks.iter().zip(["paid", "shipped"]) {
        let m = member.recv().await;
        assert_eq!(
            (m["type"].as_str(), m["from"].as_str()),
            (Some("message"), Some("backend")),
            "{m}"
        );
        assert_eq!(
            (m["offset"].clone(), m["data"]["status"].as_str()),
            (ack["offset"].clone(), Some(status))
        );
    }

    let (code, out, err) =
        publish_lines(server.addr(), "not-the-key-0123456789", "orders:42", "{}\n").await;
    assert_eq!((code, out.as_str()), (69, ""), "{err}");
    assert!(err.contains("401") && !err.contains("not-the-key"), "{err}");
    let (code, _, err) = publish_lines(
        server.addr(),
        KEY,
        "orders:42",
        "{\"ok\":1}\nnot json\n{}\n",
    )
    .await;
    assert_eq!(code, 65, "{err}");
    let m = member.recv().await;
    assert_eq!(m["offset"], 3, "the line before the bad one went out: {m}");
    let history = member
        .request(json!({"type": "history", "room": "orders:42", "since": 3, "id": 1}))
        .await;
    assert_eq!(
        history["messages"],
        json!([]),
        "nothing after it: {history}"
    );
}

/// The printer farm as its own binary against two fake OctoPrint servers:
/// a browser pauses a print over RPC (OctoPrint's `POST /api/job` is what
/// the fake receives), follows `$printers` (a `latest` feed), and the
/// farm's own actor, a member of that feed, answers `farm.summary`.
#[actix_rt::test]
async fn the_printer_farm_pauses_prints_and_summarises_the_feed() {
    use common::fake_http::{paused, printer, Fake, Reply};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (mk4, mini) = (Fake::start(false), Fake::start(false));
    mk4.set("/api/printer", printer("Printing", true, false));
    mini.set("/api/printer", printer("Operational", false, false));
    for fake in [&mk4, &mini] {
        fake.set("POST /api/job", Reply::raw(204, ""));
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("farm.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "sqlite://{db}"

[printers]
timeout_ms = 1000

[[printers.devices]]
name = "mk4"
url = "{mk4}"
api_key = "farm-key-mk4"
interval_ms = 100

[[printers.devices]]
name = "mini"
url = "{mini}"
api_key = "farm-key-mini"
interval_ms = 100

[[rooms.namespaces]]
prefix = "$printers"
slow_consumer = "latest"
"#,
            db = dir.path().join("farm.db").display(),
            mk4 = mk4.url(""),
            mini = mini.url(""),
        ),
    )
    .unwrap();
    let mut child = Command::new(example("printer_farm"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_remove("HOLDFAST_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(
        "the farm is ready",
        Duration::from_secs(30),
        || async move {
            reqwest::get(format!("http://{addr}/health/ready"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let mut c = try_connect(addr, "", &[]).await.expect("upgrade");
    c.join("$printers").await;
    // The farm follows the feed: both printers, as polled.
    farm_summary_until(
        &mut c,
        "printers",
        json!({"mk4": "printing", "mini": "idle"}),
    )
    .await;

    mk4.set("/api/printer", paused("Paused"));
    let pause = c
        .request(json!({"type": "rpc", "method": "printers.pause", "data": {"printer": "mk4"}, "id": "p"}))
        .await;
    assert_eq!(pause["data"]["state"], "paused", "{pause}");
    assert_eq!(
        mk4.seen("POST /api/job")[0].body,
        json!({"command": "pause", "action": "pause"})
    );
    farm_summary_until(&mut c, "by_state", json!({"idle": 1, "paused": 1})).await;

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().expect("the farm exits").code(), Some(0));
}

/// Asks `farm.summary` until its `key` is `want` (each round trip is the
/// poll), within 15 s.
async fn farm_summary_until(c: &mut common::ws::Client, key: &str, want: Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = c
            .request(json!({"type": "rpc", "method": "farm.summary", "id": "s"}))
            .await;
        if s["data"][key] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "farm.summary {key} never became {want}: {s}"
        );
    }
}
