//! A backend that publishes into a Holdfast room through the server API
//! (`POST /api/v1/publish`), the way an order service or a cron job would:
//! one JSON document per line of standard input, each published to the
//! room, each answered on standard output with the offset the room gave it
//! (the same on every node). `cargo test` runs it against a server and a
//! WebSocket client in the room (`tests/examples.rs`).
//!
//! ```sh
//! echo '{"order": 42, "status": "shipped"}' |
//!   HOLDFAST_URL=http://127.0.0.1:8080 HOLDFAST_API_KEY=... \
//!   cargo run --example backend_publisher -- orders:42
//! ```
//!
//! Exit codes: 0 when every line was published; 65 when a line is not
//! JSON (nothing after it is sent); 69 when the server refused a publish
//! (its JSON error, e.g. `401 {"code":"unauthorized",...}`, is printed).
//! The API key is read from the environment, never from the command line,
//! and never printed.

use std::io::BufRead;

use serde_json::{json, Value};

const EXIT_DATA: i32 = 65;
const EXIT_UNAVAILABLE: i32 = 69;
const EXIT_USAGE: i32 = 64;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    std::process::exit(run().await);
}

async fn run() -> i32 {
    let (Some(room), Ok(base), Ok(key)) = (
        std::env::args().nth(1),
        std::env::var("HOLDFAST_URL"),
        std::env::var("HOLDFAST_API_KEY"),
    ) else {
        eprintln!("usage: HOLDFAST_URL=http://host:port HOLDFAST_API_KEY=... backend_publisher ROOM < lines");
        return EXIT_USAGE;
    };
    let url = format!("{}/api/v1/publish", base.trim_end_matches('/'));
    // TLS (for `https://` servers) with ring, as Holdfast itself uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let data: Value = match serde_json::from_str(&line) {
            Ok(data) => data,
            Err(e) => {
                eprintln!("line {}: not JSON: {e}", n + 1);
                return EXIT_DATA;
            }
        };
        let sent = client
            .post(&url)
            .bearer_auth(&key)
            .json(&json!({"room": room, "data": data, "from": "backend"}))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                eprintln!("line {}: {}", n + 1, e.without_url());
                return EXIT_UNAVAILABLE;
            }
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            eprintln!("line {}: {} {body}", n + 1, status.as_u16());
            return EXIT_UNAVAILABLE;
        }
        println!("{body}");
    }
    0
}
