//! `holdfast monitor`, the real binary, against servers the tests control: a
//! liveness endpoint the test flips between 200 and 500, a child process
//! (a shell that records its pid and start time, then sleeps) whose restarts
//! the test observes, a webhook receiver and a minimal SMTP server, each
//! also over TLS with a certificate that a CA made for the test signed.

#[path = "../../tests/common/tls.rs"]
mod tls;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
    BufReader as TokioBufReader,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use tls::TestPki;

#[path = "monitor/fakes.rs"]
mod fakes;

use fakes::*;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// Polls `cond` every 10 ms until it holds; panics with `what` at the deadline.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `pid start_ms` lines the child script writes, one per incarnation.
fn starts(path: &Path) -> Vec<(u32, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, ms) = l.split_once(' ')?;
            Some((pid.parse().ok()?, ms.parse().ok()?))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The child: records its pid and start time, then becomes `sleep` (so the
/// pid stays the same). With `ignore_term` it ignores SIGTERM, as a wedged
/// server would.
fn child_script(pids: &Path, ignore_term: bool) -> String {
    let trap = if ignore_term { "trap '' TERM; " } else { "" };
    format!(
        "{trap}echo \"$$ $(date +%s%3N)\" >> '{}'; exec sleep 600",
        pids.display()
    )
}

/// A running `holdfast monitor` with its JSON log lines captured.
struct Monitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Monitor {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Monitor {
        let mut child = Command::new(BIN)
            .arg("monitor")
            .args(args)
            .env_remove("HOLDFAST_ENV")
            .env("HOLDFAST__MONITOR__INTERVAL_MS", "50")
            .env("HOLDFAST__MONITOR__TIMEOUT_MS", "1000")
            .env("HOLDFAST__MONITOR__STARTUP_GRACE_MS", "0")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn holdfast monitor");
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Monitor { child, lines }
    }

    fn logged(&self, message: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    fn log_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Monitor {
    /// SIGTERM: the monitor stops its child and exits; SIGKILL if it hangs.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child whose liveness turns to 500 is restarted after exactly
/// `monitor.failures` failed polls (SIGTERM, new process), and not before;
/// once it answers again it is left alone.
#[tokio::test]
async fn a_child_failing_its_liveness_is_restarted_after_the_configured_failures() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let live = Liveness::start(Some(pids.clone())).await;
    let script = child_script(&pids, false);
    let monitor = Monitor::start(
        &["--url", &live.url, "--exec", "sh", "-c", &script],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "3"),
            ("HOLDFAST__MONITOR__COOLDOWN_MS", "0"),
            ("HOLDFAST__MONITOR__MAX_RESTARTS", "10"),
        ],
    );
    wait_until("the first child", Duration::from_secs(10), || {
        starts(&pids).len() == 1
    })
    .await;
    let first = starts(&pids)[0].0;
    wait_until("10 healthy polls", Duration::from_secs(10), || {
        live.count() >= 10
    })
    .await;
    assert_eq!(starts(&pids).len(), 1, "a healthy child is not restarted");

    live.set(500);
    wait_until("the restart", Duration::from_secs(10), || {
        starts(&pids).len() == 2
    })
    .await;
    let failed_while_first_ran = live
        .served()
        .iter()
        .filter(|s| s.status == 500 && s.first_child_alive)
        .count();
    assert_eq!(
        failed_while_first_ran, 3,
        "restarted after exactly monitor.failures failed polls"
    );
    let second = starts(&pids)[1].0;
    assert_ne!(first, second);
    assert!(!alive(first), "the old child is gone");
    assert!(alive(second), "the new child runs");

    live.set(200);
    let seen = live.count();
    wait_until("10 more polls", Duration::from_secs(10), || {
        live.count() >= seen + 10
    })
    .await;
    assert_eq!(starts(&pids).len(), 2, "a recovered child is left alone");
    assert_eq!(monitor.logged("child restarted").len(), 1);
}

/// A child that ignores SIGTERM is killed with SIGKILL once the grace
/// period has passed, then started again.
#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let live = Liveness::start(None).await;
    let script = child_script(&pids, true);
    let monitor = Monitor::start(
        &["--url", &live.url, "--exec", "sh", "-c", &script],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "1"),
            ("HOLDFAST__MONITOR__COOLDOWN_MS", "0"),
            ("HOLDFAST__MONITOR__GRACE_MS", "600"),
        ],
    );
    wait_until("the first child", Duration::from_secs(10), || {
        starts(&pids).len() == 1
    })
    .await;
    live.set(500);
    wait_until("the restart", Duration::from_secs(10), || {
        starts(&pids).len() == 2
    })
    .await;
    let first_failure = live
        .served()
        .iter()
        .find(|s| s.status == 500)
        .unwrap()
        .at_ms;
    let (first, _) = starts(&pids)[0];
    let (_, restarted_at) = starts(&pids)[1];
    assert!(
        restarted_at >= first_failure + 600,
        "waited the grace period: failed at {first_failure}, restarted at {restarted_at}"
    );
    assert!(!alive(first), "the child that ignored SIGTERM was killed");
    let killed = monitor.logged("child did not stop within the grace period; killed");
    assert_eq!(killed.len(), 1, "{}", monitor.log_text());
    assert_eq!(killed[0]["pid"], first);
}

/// Restarts are at least `monitor.cooldown_ms` apart and at most
/// `monitor.max_restarts` in the window; then the monitor stops restarting
/// and raises one critical alert, which the webhook gets, and its textfile
/// metrics say so.
#[tokio::test]
async fn the_cooldown_and_the_max_restarts_limit_hold() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let textfile = dir.path().join("holdfast_monitor.prom");
    let live = Liveness::start(None).await;
    let hook = Webhook::start("/hooks/alerts").await;
    live.set(500);
    let script = child_script(&pids, false);
    let monitor = Monitor::start(
        &["--url", &live.url, "--exec", "sh", "-c", &script],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "1"),
            ("HOLDFAST__MONITOR__COOLDOWN_MS", "800"),
            ("HOLDFAST__MONITOR__MAX_RESTARTS", "2"),
            ("HOLDFAST__MONITOR__WINDOW_MS", "60000"),
            ("HOLDFAST__MONITOR__WEBHOOK_URL", &hook.url),
            ("HOLDFAST__MONITOR__TEXTFILE", textfile.to_str().unwrap()),
        ],
    );
    wait_until("the critical alert", Duration::from_secs(15), || {
        !hook.of_kind("gave_up").is_empty()
    })
    .await;
    let metric = |name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(&textfile).ok()?;
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")))?;
        line.rsplit(' ').next()?.parse().ok()
    };
    wait_until("the textfile says gave_up", Duration::from_secs(5), || {
        metric("holdfast_monitor_gave_up") == Some(1)
    })
    .await;
    assert_eq!(metric("holdfast_monitor_restarts_total"), Some(2));
    assert_eq!(metric("holdfast_monitor_up"), Some(0));
    let seen = live.count();
    wait_until("20 more failed polls", Duration::from_secs(10), || {
        live.count() >= seen + 20
    })
    .await;
    let started = starts(&pids);
    assert_eq!(
        started.len(),
        3,
        "the first start and 2 restarts: {started:?}"
    );
    // Measured at the children's own start, which lags each restart by the
    // shell's start-up: a few ms idle, a few hundred on a loaded machine
    // (one run of the whole suite on two cores saw the gap under 780 ms).
    // Without the cooldown the gap is one poll interval (50 ms), so 600 ms
    // still tells the two apart.
    let gap = started[2].1 - started[1].1;
    assert!(gap >= 600, "restarts {gap} ms apart, under the cooldown");

    let gave_up = hook.of_kind("gave_up");
    assert_eq!(gave_up.len(), 1, "{gave_up:?}");
    assert_eq!(gave_up[0]["severity"], "critical");
    assert_eq!(gave_up[0]["target"], live.url.as_str());
    assert_eq!(hook.of_kind("restarted").len(), 2);
    assert!(started.iter().take(2).all(|(pid, _)| !alive(*pid)));
    assert!(alive(started[2].0), "the last child is left running");
    drop(monitor); // SIGTERM: it stops, and its metrics go with it
    assert!(
        !textfile.exists(),
        "the textfile is removed when the monitor stops"
    );
}

/// In watch mode a target that stays down is announced to the webhook once
/// (not on every failed poll), and so is its recovery, even when it flaps;
/// every alert names the target; the webhook URL, a secret, is never logged.
#[tokio::test]
async fn webhook_alerts_are_deduplicated() {
    let live = Liveness::start(None).await;
    let hook = Webhook::start("/hooks/s3cr3t-hook-credential").await;
    live.set(500);
    let monitor = Monitor::start(
        &["--url", &live.url],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "2"),
            ("HOLDFAST__MONITOR__WEBHOOK_URL", &hook.url),
        ],
    );
    wait_until("20 failed polls", Duration::from_secs(10), || {
        live.count() >= 20
    })
    .await;
    wait_until("the unhealthy alert", Duration::from_secs(5), || {
        !hook.of_kind("unhealthy").is_empty()
    })
    .await;
    let alert = &hook.of_kind("unhealthy")[0];
    assert_eq!(alert["severity"], "warning");
    assert_eq!(alert["target"], live.url.as_str());
    assert_eq!(alert["source"], "holdfast monitor");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("failed 2 consecutive"),
        "{alert}"
    );
    assert!(
        alert["at"].is_string() && alert["host"].is_string(),
        "{alert}"
    );

    for _ in 0..2 {
        live.set(200);
        wait_until("the recovery alert", Duration::from_secs(5), || {
            !hook.of_kind("recovered").is_empty()
        })
        .await;
        let seen = live.count();
        wait_until("5 healthy polls", Duration::from_secs(5), || {
            live.count() >= seen + 5
        })
        .await;
        live.set(500);
        let seen = live.count();
        wait_until("10 failed polls", Duration::from_secs(5), || {
            live.count() >= seen + 10
        })
        .await;
    }
    assert_eq!(
        hook.of_kind("unhealthy").len(),
        1,
        "{:?}",
        hook.alerts.lock().unwrap()
    );
    assert_eq!(hook.of_kind("recovered").len(), 1);
    assert!(
        monitor.logged("alert raised").len() == 2,
        "two alerts sent, the rest suppressed: {}",
        monitor.log_text()
    );
    assert!(
        !monitor.log_text().contains("s3cr3t"),
        "the webhook URL leaked into the log"
    );
}

/// Alerts are emailed through the configured SMTP relay: from and to as
/// configured, the kind and the target in the subject, the reason in the body.
#[tokio::test]
async fn alerts_are_emailed_over_smtp() {
    let live = Liveness::start(None).await;
    let (port, mails) = smtp_server(SmtpMode::Plain).await;
    live.set(500);
    let _monitor = emailing_monitor(
        &live.url,
        ("127.0.0.1", port),
        "none",
        "ops@example.test,oncall@example.test",
        &[],
    );
    wait_until("an email", Duration::from_secs(10), || {
        !mails.lock().unwrap().is_empty()
    })
    .await;
    let mail = mails.lock().unwrap()[0].clone();
    assert!(mail.from.contains("<monitor@example.test>"), "{mail:?}");
    assert_eq!(mail.to.len(), 2, "{mail:?}");
    assert!(mail.to[0].contains("ops@example.test") && mail.to[1].contains("oncall@example.test"));
    let subject = mail
        .data
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap_or_default();
    assert!(
        subject.contains("WARNING") && subject.contains("unhealthy") && subject.contains(&live.url),
        "{subject}"
    );
    assert!(
        mail.data.contains("failed 1 consecutive liveness polls"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains("To: ops@example.test, oncall@example.test"),
        "{}",
        mail.data
    );
}

/// Alerts reach an `https://` webhook (at `localhost`) whose certificate a
/// CA made for the test signed, once `tls.ca_file` names that CA; the
/// liveness poll goes over `https://` with the same trust. The webhook's
/// secret path stays out of the log.
#[tokio::test]
async fn alerts_reach_an_https_webhook_when_tls_ca_file_trusts_its_ca() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let live = Liveness::start_tls(pki.acceptor()).await;
    let hook = Webhook::start_tls("/hooks/s3cr3t-hook-credential", pki.acceptor()).await;
    assert!(hook.url.starts_with("https://localhost:"), "{}", hook.url);
    assert!(live.url.starts_with("https://127.0.0.1:"), "{}", live.url);
    let monitor = Monitor::start(
        &["--url", &live.url],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "1"),
            ("HOLDFAST__MONITOR__WEBHOOK_URL", &hook.url),
            ("HOLDFAST__TLS__CA_FILE", ca.to_str().unwrap()),
        ],
    );
    wait_until("healthy polls over https", Duration::from_secs(10), || {
        live.served().iter().filter(|s| s.status == 200).count() >= 3
    })
    .await;
    live.set(500);
    wait_until(
        "the unhealthy alert over https",
        Duration::from_secs(10),
        || !hook.of_kind("unhealthy").is_empty(),
    )
    .await;
    let alert = &hook.of_kind("unhealthy")[0];
    assert_eq!(alert["target"], live.url.as_str(), "{alert}");
    assert_eq!(alert["source"], "holdfast monitor", "{alert}");
    assert!(
        !monitor.log_text().contains("s3cr3t"),
        "the webhook URL leaked into the log"
    );
}

/// Without its CA in `tls.ca_file`, an `https://` webhook gets nothing: the
/// handshake fails, and the log says why (an unknown issuer) without
/// showing the webhook's URL.
#[tokio::test]
async fn an_untrusted_https_webhook_gets_nothing_and_the_log_says_why() {
    let pki = TestPki::new();
    let live = Liveness::start(None).await;
    let hook = Webhook::start_tls("/hooks/s3cr3t-hook-credential", pki.acceptor()).await;
    live.set(500);
    let monitor = Monitor::start(
        &["--url", &live.url],
        &[
            ("HOLDFAST__MONITOR__FAILURES", "1"),
            ("HOLDFAST__MONITOR__WEBHOOK_URL", &hook.url),
        ],
    );
    wait_until("a failed delivery", Duration::from_secs(10), || {
        !monitor
            .logged("alert not delivered to the webhook")
            .is_empty()
    })
    .await;
    let line = &monitor.logged("alert not delivered to the webhook")[0];
    let error = line["error"].as_str().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{line}");
    assert!(hook.alerts.lock().unwrap().is_empty());
    assert!(
        !monitor.log_text().contains("s3cr3t"),
        "the webhook URL leaked into the log"
    );
}

/// A monitor watching `url` that alerts after one failed poll, by email
/// through the relay at `relay` (host, port) with `monitor.smtp_security =
/// security`, from monitor@example.test to `to`; `extra` adds settings.
fn emailing_monitor(
    url: &str,
    relay: (&str, u16),
    security: &str,
    to: &str,
    extra: &[(&str, &str)],
) -> Monitor {
    let port = relay.1.to_string();
    let mut envs = vec![
        ("HOLDFAST__MONITOR__FAILURES", "1"),
        ("HOLDFAST__MONITOR__SMTP_HOST", relay.0),
        ("HOLDFAST__MONITOR__SMTP_PORT", port.as_str()),
        ("HOLDFAST__MONITOR__SMTP_SECURITY", security),
        ("HOLDFAST__MONITOR__SMTP_FROM", "monitor@example.test"),
        ("HOLDFAST__MONITOR__SMTP_TO", to),
    ];
    envs.extend_from_slice(extra);
    Monitor::start(&["--url", url], &envs)
}

/// Runs a monitor whose target fails at once, emailing through a minimal
/// SMTP server in `mode` at `host` with `monitor.smtp_security = security`,
/// trusting the CA of `pki`; answers the first mail.
async fn one_emailed_alert(mode: SmtpMode, host: &str, security: &str, pki: &TestPki) -> Mail {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let live = Liveness::start(None).await;
    let (port, mails) = smtp_server(mode).await;
    live.set(500);
    let monitor = emailing_monitor(
        &live.url,
        (host, port),
        security,
        "ops@example.test",
        &[("HOLDFAST__TLS__CA_FILE", ca.to_str().unwrap())],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while mails.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no email within 10 s: {}",
            monitor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mail = mails.lock().unwrap()[0].clone();
    mail
}

/// With `smtp_security = "starttls"` the alert goes over TLS after STARTTLS,
/// to a relay at `localhost` whose certificate the `tls.ca_file` CA signed.
#[tokio::test]
async fn alerts_are_emailed_over_starttls() {
    let pki = TestPki::new();
    let mail = one_emailed_alert(
        SmtpMode::StartTls(pki.acceptor()),
        "localhost",
        "starttls",
        &pki,
    )
    .await;
    assert!(mail.over_tls, "{mail:?}");
    assert!(mail.from.contains("<monitor@example.test>"), "{mail:?}");
    assert!(mail.data.contains("unhealthy"), "{}", mail.data);
}

/// With `smtp_security = "tls"` the alert goes over TLS from the first byte
/// (implicit TLS) to a relay at 127.0.0.1, checked against its IP address.
#[tokio::test]
async fn alerts_are_emailed_over_implicit_tls() {
    let pki = TestPki::new();
    let mail =
        one_emailed_alert(SmtpMode::Implicit(pki.acceptor()), "127.0.0.1", "tls", &pki).await;
    assert!(mail.over_tls, "{mail:?}");
    assert!(mail.to[0].contains("ops@example.test"), "{mail:?}");
}

/// `starttls` is required, not hoped for: a relay that does not offer
/// STARTTLS gets no mail (no silent fall-back to plain text), and the log
/// says the alert was not emailed.
#[tokio::test]
async fn starttls_is_required_not_optional() {
    let live = Liveness::start(None).await;
    let (port, mails) = smtp_server(SmtpMode::Plain).await;
    live.set(500);
    let monitor = emailing_monitor(
        &live.url,
        ("127.0.0.1", port),
        "starttls",
        "ops@example.test",
        &[],
    );
    wait_until("the failed email", Duration::from_secs(10), || {
        !monitor.logged("alert not emailed").is_empty()
    })
    .await;
    assert!(
        mails.lock().unwrap().is_empty(),
        "{:?}",
        mails.lock().unwrap()
    );
}

/// A relay whose certificate no trusted CA signed (no `tls.ca_file`) gets
/// nothing over implicit TLS, and the log says why.
#[tokio::test]
async fn an_untrusted_smtp_relay_gets_nothing_and_the_log_says_why() {
    let pki = TestPki::new();
    let live = Liveness::start(None).await;
    let (port, mails) = smtp_server(SmtpMode::Implicit(pki.acceptor())).await;
    live.set(500);
    let monitor = emailing_monitor(
        &live.url,
        ("127.0.0.1", port),
        "tls",
        "ops@example.test",
        &[],
    );
    wait_until("the failed email", Duration::from_secs(10), || {
        !monitor.logged("alert not emailed").is_empty()
    })
    .await;
    let line = &monitor.logged("alert not emailed")[0];
    assert!(
        line["error"]
            .as_str()
            .unwrap_or_default()
            .contains("UnknownIssuer"),
        "{line}"
    );
    assert!(mails.lock().unwrap().is_empty());
}

/// A `tls.ca_file` that cannot be read stops the monitor before it starts
/// anything: exit 64, the key named.
#[tokio::test]
async fn an_unreadable_ca_file_exits_64_naming_the_key() {
    let out = Command::new(BIN)
        .args(["monitor", "--url", "https://127.0.0.1:1/health/live"])
        .env_remove("HOLDFAST_ENV")
        .env("HOLDFAST__TLS__CA_FILE", "/no/such/ca.pem")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("tls.ca_file") && err.contains("/no/such/ca.pem"),
        "{err}"
    );
}

/// By default the child is this very binary's `serve`: the monitor starts a
/// real server, starts it again when it dies (SIGKILL), and on SIGTERM stops
/// it gracefully (the server's shutdown report) before exiting 0.
#[tokio::test]
async fn the_default_child_is_the_server_and_a_killed_one_comes_back() {
    // A free port for the server; the monitor polls it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let url = format!("http://127.0.0.1:{port}/health/live");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/holdfast.db", dir.path().display());
    let mut monitor = Monitor::start(
        &[],
        &[
            ("HOLDFAST__SERVER__PORT", &port),
            ("HOLDFAST__DATABASE__URL", &db),
            ("HOLDFAST__MONITOR__COOLDOWN_MS", "0"),
            ("HOLDFAST__MONITOR__STARTUP_GRACE_MS", "30000"),
        ],
    );
    // reqwest in this process is built without a crypto provider of its own.
    holdfast_actors::tls::install_default_provider();
    // Ready, not only live: the server has installed its signal handlers.
    let ready_url = url.replace("/health/live", "/health/ready");
    let live = || {
        let url = ready_url.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live().await {
        assert!(Instant::now() < deadline, "the server never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = monitor.logged("child started")[0]["pid"].as_u64().unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_until("a second server", Duration::from_secs(20), || {
        monitor.logged("child started").len() == 2
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live().await {
        assert!(
            Instant::now() < deadline,
            "the restarted server never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(monitor.logged("child exited").len(), 1);
    let second = monitor.logged("child started")[1]["pid"].as_u64().unwrap();
    assert_ne!(first, second);

    let _ = Command::new("kill")
        .arg(monitor.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = monitor.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the monitor did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    let report = monitor.logged("shutdown report");
    assert_eq!(report.len(), 1, "{}", monitor.log_text());
    assert_eq!(report[0]["exit_code"], 0);
    assert!(!alive(second as u32), "the server stopped with the monitor");
}
