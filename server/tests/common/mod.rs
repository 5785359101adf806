//! Helpers shared by the tests that run the real `holdfast` binary.
#![allow(dead_code)]

#[path = "../../../tests/common/client_frame.rs"]
pub mod client_frame;
pub mod netfuzz;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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

/// The `holdfast` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// A number unique within this test process.
pub fn next_id() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// A running `holdfast serve` with its stdout captured line by line.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Where it listens, `host:port`.
    pub addr: String,
    /// Its stdout so far, line by line.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(envs: &[(&str, &str)]) -> Server {
        Self::start_with(&[], envs)
    }

    /// `holdfast ARGS` (e.g. `--config FILE`) with `envs`.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        let db = std::env::temp_dir().join(format!(
            "holdfast-proc-{}-{}",
            std::process::id(),
            next_id()
        ));
        cmd.env("HOLDFAST__SERVER__PORT", "0")
            .env(
                "HOLDFAST__DATABASE__URL",
                format!("sqlite://{}/holdfast.db", db.display()),
            )
            .env_remove("HOLDFAST_ENV")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn holdfast");
        let (lines, addr) = await_listening(&mut child);
        Server { child, addr, lines }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        get(&format!("http://{}{path}", self.addr))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let mut code = None;
        wait_until("the process to exit", timeout, || {
            code = self
                .child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1));
            code.is_some()
        });
        code.unwrap()
    }

    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url`: status (0 when no answer) and body.
pub fn get(url: &str) -> (u16, String) {
    // reqwest is built without a crypto provider of its own.
    holdfast_actors::tls::install_default_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(url).send() {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.text().unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}
