//! The examples in `examples/`, run end to end as the processes a user
//! would run (`cargo test` builds them first), through real clients.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

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
/// settings, its room handler refuses a banned word and trims the rest,
/// its RPC answers, and SIGTERM stops it with exit 0.
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
    // The ack and the message, in either order.
    let (mut ack, mut message) = (c.recv().await, c.recv().await);
    if ack["type"] == "message" {
        std::mem::swap(&mut ack, &mut message);
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

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(c.close_code().await, 1001);
    let status = child.wait().expect("the chat exits");
    assert_eq!(status.code(), Some(0));
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
