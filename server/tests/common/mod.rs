//! Helpers shared by the tests that run the real `holdfast` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Collects a spawned server's piped stdout line by line and waits for its
/// `listening; ready` log line; answers the lines so far (still growing) and
/// the address it listens on.
pub fn await_listening(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, String) {
    let stdout = child.stdout.take().expect("piped stdout");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut addr = None;
    wait_until(
        "the 'listening; ready' log line",
        Duration::from_secs(20),
        || {
            addr = lines.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "listening; ready").then(|| v["addr"].as_str().unwrap().to_owned())
            });
            addr.is_some()
        },
    );
    (lines, addr.expect("checked by wait_until"))
}
