//! systemd `Type=notify`: the real binary, with `NOTIFY_SOCKET` pointing at a
//! unix datagram socket the test owns, as systemd would set it.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
mod common;

use std::time::Duration;

use common::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// The server under a fake systemd: every notification line, in arrival order.
struct Notified {
    server: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Notified {
    fn start(envs: &[(&str, &str)]) -> Notified {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the test drops the directory and the socket errors.
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().extend(text.lines().map(str::to_owned));
            }
        });
        let mut server = Command::new(BIN)
            .env_remove("HOLDFAST_ENV")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("HOLDFAST__SERVER__PORT", "0")
            .env("NOTIFY_SOCKET", &path)
            .env(
                "HOLDFAST__DATABASE__URL",
                format!("sqlite://{}/holdfast.db", dir.path().display()),
            )
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (_logs, addr) = common::await_listening(&mut server);
        Notified {
            server,
            lines,
            addr,
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| l == line)
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    fn sigterm_and_wait(&mut self) -> i32 {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.server.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let mut code = None;
        wait_until("the server to exit", Duration::from_secs(30), || {
            code = self
                .server
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1));
            code.is_some()
        });
        code.unwrap()
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn ready_status(addr: &str) -> u16 {
    // reqwest is built without a crypto provider of its own.
    holdfast_actors::tls::install_default_provider();
    reqwest::blocking::get(format!("http://{addr}/health/ready"))
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// READY=1 arrives once readiness is 200, WATCHDOG=1 keeps arriving while
/// the server is live (WATCHDOG_USEC set), STATUS= follows the connection
/// count, and STOPPING=1 arrives after SIGTERM, before the clean exit.
#[test]
fn ready_watchdog_status_and_stopping_reach_the_notify_socket() {
    let mut s = Notified::start(&[("WATCHDOG_USEC", "200000")]);
    wait_until("READY=1", Duration::from_secs(10), || {
        s.position("READY=1").is_some()
    });
    assert_eq!(ready_status(&s.addr), 200, "READY=1 only once ready");
    assert!(
        s.lines()
            .contains(&"STATUS=ready; 0 connections".to_owned()),
        "{:?}",
        s.lines()
    );
    wait_until("five watchdog pings", Duration::from_secs(10), || {
        s.count("WATCHDOG=1") >= 5
    });
    assert!(s.position("WATCHDOG=1") > s.position("READY=1"));

    // A WebSocket client shows in STATUS=.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(tokio_tungstenite::connect_async(format!(
            "ws://{}/ws",
            s.addr
        )))
        .expect("upgrade");
    wait_until(
        "STATUS with one connection",
        Duration::from_secs(10),
        || s.position("STATUS=ready; 1 connections").is_some(),
    );
    drop(client);

    assert_eq!(s.position("STOPPING=1"), None);
    let code = s.sigterm_and_wait();
    assert_eq!(code, 0);
    wait_until("STOPPING=1", Duration::from_secs(5), || {
        s.position("STOPPING=1").is_some()
    });
    assert!(s.position("STOPPING=1") > s.position("READY=1"));
}

/// Without WATCHDOG_USEC the server sends READY=1 and STOPPING=1 but never
/// WATCHDOG=1.
#[test]
fn no_watchdog_pings_without_watchdog_usec() {
    let mut s = Notified::start(&[]);
    wait_until("READY=1", Duration::from_secs(10), || {
        s.position("READY=1").is_some()
    });
    // Long enough for several pings at any interval this test could set.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.sigterm_and_wait(), 0);
    wait_until("STOPPING=1", Duration::from_secs(5), || {
        s.position("STOPPING=1").is_some()
    });
    assert_eq!(s.count("WATCHDOG=1"), 0, "{:?}", s.lines());
}
