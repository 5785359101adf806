//! `holdfast monitor`: the external watchdog, the job the seed servers'
//! shell scripts did.
//!
//! Two modes:
//!
//! - **child** (the default, or `--exec PROGRAM ARGS...`): starts the server
//!   as a child process (by default this very binary with `serve`, the
//!   `--config` file forwarded), polls its liveness URL every
//!   `monitor.interval_ms`, and after `monitor.failures` consecutive failed
//!   polls, or when the child exits, restarts it: SIGTERM, then SIGKILL once
//!   `monitor.grace_ms` has passed. Restarts are at least
//!   `monitor.cooldown_ms` apart and at most `monitor.max_restarts` within
//!   `monitor.window_ms`; past that the monitor stops restarting, raises a
//!   critical alert and only watches.
//! - **watch** (`--url URL` without `--exec`): polls the URL and alerts; it
//!   has nothing to restart.
//!
//! After a (re)start, failed polls do not count until one succeeds or
//! `monitor.startup_grace_ms` passes, so a slow start is not a failure.
//!
//! Alerts (unhealthy, recovered, exited, restarted, gave up, cannot start)
//! go to a webhook (JSON POST) and to email over SMTP, both optional. An
//! alert of the same kind as one sent within `monitor.alert_dedup_ms` is
//! dropped, so a target that stays down is re-announced once per that
//! period, not on every poll; at most `monitor.alert_limit` alerts go out per
//! `monitor.alert_window_ms`, except critical ones. The next alert sent says
//! how many were suppressed. Delivery never delays the polls.
//!
//! SIGTERM or SIGINT stop the monitor: it stops the child the same graceful
//! way, then exits 0. On Linux the child also gets SIGTERM if the monitor
//! dies, so no server is left without its watchdog.
//!
//! The liveness URL and the webhook may be `https://`, and email may go
//! over STARTTLS or implicit TLS (`monitor.smtp_security`); all of them
//! trust what `[tls]` trusts (the system's CA certificates plus
//! `tls.ca_file`).
//!
//! The monitor logs JSON lines like the server (the `[log]` section). The
//! webhook URL and the SMTP password are secrets: they never appear in a
//! log line.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use holdfast_actors::services::error_chain;
use holdfast_actors::tls::ClientTls;

use crate::config::{MonitorSettings, Settings, EXIT_CONFIG};

mod alerts;
mod watchdog;

use alerts::{hostname, Alerter, Channels};
pub use alerts::{Alert, AlertGate, GateDecision, Severity};
pub use watchdog::{Limits, PollVerdict, RestartVerdict, Watchdog};

/// Bound on delivering one alert to one channel.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Start this command, poll `url`, restart the command when it fails.
    Child {
        /// The program.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
        /// The liveness URL.
        url: String,
    },
    /// Only poll `url` and alert.
    Watch {
        /// The liveness URL.
        url: String,
    },
}

impl Target {
    /// The URL polled.
    pub fn url(&self) -> &str {
        match self {
            Target::Child { url, .. } | Target::Watch { url } => url,
        }
    }
}

/// A running child.
struct ChildProcess {
    child: tokio::process::Child,
    pid: u32,
}

/// How a stop ended.
#[derive(Debug)]
enum Stopped {
    /// It exited after SIGTERM, within the grace period.
    Terminated(Option<ExitStatus>),
    /// It overran the grace period and was killed.
    Killed,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Terminated(Some(status)) => write!(f, "terminated ({status})"),
            Stopped::Terminated(None) => f.write_str("terminated"),
            Stopped::Killed => f.write_str("killed after the grace period"),
        }
    }
}

impl ChildProcess {
    /// Starts `program args`, in its own process group (a terminal's Ctrl-C
    /// reaches the monitor, which stops the child in order), without the
    /// monitor's systemd variables (the child is not the unit's main process).
    fn spawn(program: &PathBuf, args: &[String]) -> std::io::Result<Self> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child exited at once"))?;
        Ok(Self { child, pid })
    }

    /// SIGTERM, then SIGKILL once `grace` has passed.
    async fn stop(&mut self, grace: Duration) -> Stopped {
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet
        // (reaping happens only through `self.child`), so it is still ours.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Stopped::Terminated(status.ok()),
            Err(_) => {
                let _ = self.child.kill().await;
                Stopped::Killed
            }
        }
    }
}

/// The liveness URL on the configured address.
pub fn local_url(settings: &Settings, path: &str) -> String {
    let host = match settings.server.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    };
    format!("http://{host}:{}{path}", settings.server.port)
}

/// Decides the target from the command line and config: `--exec` runs that
/// command; `--url` alone only watches; neither runs this binary's `serve`.
///
/// # Errors
/// When the current executable cannot be found.
pub fn target(
    settings: &Settings,
    config: Option<&std::path::Path>,
    url: Option<String>,
    exec: Option<Vec<String>>,
) -> std::io::Result<Target> {
    let configured = || {
        if settings.monitor.url.is_empty() {
            local_url(settings, "/health/live")
        } else {
            settings.monitor.url.clone()
        }
    };
    Ok(match (exec, url) {
        (Some(mut command), url) if !command.is_empty() => {
            let program = PathBuf::from(command.remove(0));
            Target::Child {
                program,
                args: command,
                url: url.unwrap_or_else(configured),
            }
        }
        (_, Some(url)) => Target::Watch { url },
        (_, None) => {
            let mut args = Vec::new();
            if let Some(path) = config {
                args.push("--config".to_owned());
                args.push(path.display().to_string());
            }
            args.push("serve".to_owned());
            Target::Child {
                program: std::env::current_exe()?,
                args,
                url: configured(),
            }
        }
    })
}

/// Runs the monitor until SIGTERM or SIGINT; returns the exit code.
pub fn run(settings: &Settings, target: Target) -> i32 {
    let guard = match crate::logging::init(&settings.log, None) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("holdfast: config error: key `log.file`: {e}");
            return EXIT_CONFIG;
        }
    };
    let m = &settings.monitor;
    let tls = match settings.tls.client() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return EXIT_CONFIG;
        }
    };
    let channels = match Channels::new(m, &tls) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return EXIT_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast monitor: {e}");
            return 1;
        }
    };
    let alerter = Alerter {
        gate: AlertGate::new(
            Duration::from_millis(m.alert_dedup_ms),
            m.alert_limit,
            Duration::from_millis(m.alert_window_ms),
        ),
        channels,
        host: hostname(),
        target: target.url().to_owned(),
        inflight: tokio::task::JoinSet::new(),
    };
    let code = runtime.block_on(Monitor::new(m, &tls, target, alerter).run());
    drop(guard);
    code
}

/// The monitor's loop state.
struct Monitor {
    target: Target,
    watchdog: Watchdog,
    alerter: Alerter,
    interval: Duration,
    grace: Duration,
    poller: Option<reqwest::Client>,
    /// The running child, in child mode; `None` while it is down.
    child: Option<ChildProcess>,
    /// Restarts since the monitor started, for unique alert keys.
    restarts_total: u64,
    /// Whether the current cooldown was already logged.
    cooldown_logged: bool,
    /// Where its metrics go after every poll (`monitor.textfile`).
    textfile: Option<PathBuf>,
    /// Whether the last poll succeeded.
    up: bool,
    /// Whether the last write of the textfile failed (logged once).
    textfile_failing: bool,
}

impl Monitor {
    fn new(m: &MonitorSettings, tls: &ClientTls, target: Target, alerter: Alerter) -> Self {
        let poller = tls
            .http_client()
            .timeout(Duration::from_millis(m.timeout_ms))
            .build()
            .ok();
        Self {
            target,
            watchdog: Watchdog::new(Limits::from_settings(m), Instant::now()),
            alerter,
            interval: Duration::from_millis(m.interval_ms),
            grace: Duration::from_millis(m.grace_ms),
            poller,
            child: None,
            restarts_total: 0,
            cooldown_logged: false,
            textfile: (!m.textfile.is_empty()).then(|| PathBuf::from(&m.textfile)),
            up: false,
            textfile_failing: false,
        }
    }

    /// Rewrites `monitor.textfile` (a temporary file renamed over it, so
    /// that a scrape never reads half of it). A failure is logged when it
    /// begins and otherwise ignored: the metrics are not worth a restart.
    fn write_textfile(&mut self) {
        let Some(path) = &self.textfile else {
            return;
        };
        let body = format!(
            "# HELP holdfast_monitor_up 1 when the monitor's last liveness poll of the server succeeded.\n\
             # TYPE holdfast_monitor_up gauge\n\
             holdfast_monitor_up {}\n\
             # HELP holdfast_monitor_restarts_total Restarts of the server by the monitor.\n\
             # TYPE holdfast_monitor_restarts_total counter\n\
             holdfast_monitor_restarts_total {}\n\
             # HELP holdfast_monitor_gave_up 1 once the monitor reached its restart limit and only watches.\n\
             # TYPE holdfast_monitor_gave_up gauge\n\
             holdfast_monitor_gave_up {}\n",
            u8::from(self.up),
            self.restarts_total,
            u8::from(self.watchdog.gave_up()),
        );
        let tmp = path.with_extension("prom.tmp");
        let written = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Err(e) if !self.textfile_failing => {
                warn!(path = %path.display(), error = %e, "monitor.textfile not written; retried after every poll");
                self.textfile_failing = true;
            }
            Err(_) => {}
            Ok(()) => self.textfile_failing = false,
        }
    }

    async fn run(mut self) -> i32 {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return 1;
        };
        let url = self.target.url().to_owned();
        match &self.target {
            Target::Child { program, args, .. } => {
                info!(url = %url, program = %program.display(), args = ?args, "monitor started; starting the child");
                self.start_child();
            }
            Target::Watch { .. } => info!(url = %url, "monitor started; watching only"),
        }
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; poll after one interval
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                status = child_exit(&mut self.child) => self.on_child_exit(status).await,
                _ = ticks.tick() => self.on_tick(&url).await,
            }
        }
        info!("monitor stopping");
        if let Some(mut child) = self.child.take() {
            let stopped = child.stop(self.grace).await;
            info!(pid = child.pid, outcome = %stopped, "child stopped");
        }
        if let Some(path) = &self.textfile {
            // A stopped monitor reports nothing, rather than its last poll.
            let _ = std::fs::remove_file(path);
        }
        self.alerter.flush().await;
        0
    }

    /// One poll, or, with the child down, another try at restarting it.
    async fn on_tick(&mut self, url: &str) {
        self.tick(url).await;
        self.write_textfile();
    }

    async fn tick(&mut self, url: &str) {
        let child_mode = matches!(self.target, Target::Child { .. });
        if child_mode && self.child.is_none() {
            self.up = false;
            self.try_restart().await;
            return;
        }
        let ok = self.poll(url).await;
        self.up = ok;
        match self.watchdog.on_poll(ok, Instant::now()) {
            PollVerdict::Healthy => {}
            PollVerdict::Recovered => {
                info!(url = %url, "target recovered");
                self.alerter.raise(
                    Severity::Info,
                    "recovered",
                    "recovered".into(),
                    format!("{url} answers again"),
                );
            }
            PollVerdict::Starting => debug!(url = %url, "poll failed during the start-up grace"),
            PollVerdict::Failing(n) => warn!(url = %url, consecutive = n, "liveness poll failed"),
            PollVerdict::Down(n) => {
                warn!(url = %url, consecutive = n, "liveness failed; target down");
                self.alerter.raise(
                    Severity::Warning,
                    "unhealthy",
                    "unhealthy".into(),
                    format!("{url} failed {n} consecutive liveness polls"),
                );
                if child_mode {
                    self.try_restart().await;
                }
            }
        }
    }

    async fn poll(&self, url: &str) -> bool {
        let Some(client) = &self.poller else {
            return false;
        };
        match client.get(url).send().await {
            Ok(res) if res.status().is_success() => true,
            Ok(res) => {
                debug!(status = res.status().as_u16(), "liveness answered an error");
                false
            }
            Err(e) => {
                debug!(error = error_chain(&e), "liveness did not answer");
                false
            }
        }
    }

    async fn on_child_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let pid = self.child.take().map(|c| c.pid);
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        error!(pid, status = %status, "child exited");
        self.watchdog.on_exit();
        self.alerter.raise(
            Severity::Warning,
            "exited",
            "exited".into(),
            match pid {
                Some(pid) => format!("the server process {pid} exited ({status})"),
                None => format!("the server process exited ({status})"),
            },
        );
        self.try_restart().await;
    }

    /// Restarts the child if the cooldown and the limit allow it.
    async fn try_restart(&mut self) {
        let now = Instant::now();
        match self.watchdog.may_restart(now) {
            RestartVerdict::Restart => {}
            RestartVerdict::Cooldown(left) => {
                if !std::mem::replace(&mut self.cooldown_logged, true) {
                    info!(
                        remaining_ms = left.as_millis() as u64,
                        "restart due, waiting out the cooldown"
                    );
                }
                return;
            }
            RestartVerdict::GiveUp => {
                let message = format!(
                    "{} restarts within {} s did not help; the monitor stops restarting {} and only watches",
                    self.watchdog.restarts_in_window(),
                    self.watchdog.limits.window.as_secs(),
                    self.target.url()
                );
                error!(detail = %message, "restart limit reached; giving up");
                self.alerter
                    .raise(Severity::Critical, "gave_up", "gave_up".into(), message);
                return;
            }
            RestartVerdict::GaveUp => return,
        }
        self.cooldown_logged = false;
        if let Some(mut child) = self.child.take() {
            match child.stop(self.grace).await {
                Stopped::Killed => warn!(
                    pid = child.pid,
                    grace_ms = self.grace.as_millis() as u64,
                    "child did not stop within the grace period; killed"
                ),
                stopped => info!(pid = child.pid, outcome = %stopped, "child stopped"),
            }
        }
        self.watchdog.restarted(Instant::now());
        self.restarts_total += 1;
        if self.start_child() {
            let n = self.watchdog.restarts_in_window();
            let pid = self.child.as_ref().map(|c| c.pid);
            info!(pid, restarts_in_window = n, "child restarted");
            self.alerter.raise(
                Severity::Warning,
                "restarted",
                format!("restarted#{}", self.restarts_total),
                format!(
                    "restarted the server behind {} ({n} of at most {} restarts in the window)",
                    self.target.url(),
                    self.watchdog.limits.max_restarts
                ),
            );
        }
    }

    /// Starts the child; on failure alerts and leaves it down (the next tick
    /// tries again, within the limits). Answers whether it started.
    fn start_child(&mut self) -> bool {
        let Target::Child { program, args, .. } = &self.target else {
            return false;
        };
        match ChildProcess::spawn(program, args) {
            Ok(child) => {
                info!(pid = child.pid, "child started");
                self.child = Some(child);
                true
            }
            Err(e) => {
                let message = format!("cannot start {}: {e}", program.display());
                error!(detail = %message, "child not started");
                self.alerter.raise(
                    Severity::Critical,
                    "start_failed",
                    "start_failed".into(),
                    message,
                );
                false
            }
        }
    }
}

/// Resolves when the child exits; never while there is none.
async fn child_exit(child: &mut Option<ChildProcess>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.child.wait().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> Limits {
        Limits {
            failures: 3,
            startup_grace: 100 * MS,
            cooldown: 1000 * MS,
            max_restarts: 2,
            window: 10_000 * MS,
        }
    }

    #[test]
    fn only_the_configured_number_of_consecutive_failures_is_down() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(limits(), t0);
        assert_eq!(w.on_poll(true, t0), PollVerdict::Healthy);
        assert_eq!(w.on_poll(false, t0), PollVerdict::Failing(1));
        assert_eq!(w.on_poll(false, t0), PollVerdict::Failing(2));
        assert_eq!(
            w.on_poll(true, t0),
            PollVerdict::Healthy,
            "a success resets"
        );
        assert_eq!(w.on_poll(false, t0), PollVerdict::Failing(1));
        assert_eq!(w.on_poll(false, t0), PollVerdict::Failing(2));
        assert_eq!(w.on_poll(false, t0), PollVerdict::Down(3));
        assert_eq!(w.on_poll(false, t0), PollVerdict::Down(4));
        assert_eq!(w.on_poll(true, t0), PollVerdict::Recovered);
        assert_eq!(w.on_poll(true, t0), PollVerdict::Healthy);
    }

    #[test]
    fn failures_in_the_startup_grace_do_not_count_until_one_poll_succeeds() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(limits(), t0);
        for _ in 0..5 {
            assert_eq!(w.on_poll(false, t0 + 50 * MS), PollVerdict::Starting);
        }
        assert_eq!(w.on_poll(false, t0 + 100 * MS), PollVerdict::Failing(1));
        w.restarted(t0 + 200 * MS);
        assert_eq!(w.on_poll(false, t0 + 210 * MS), PollVerdict::Starting);
        assert_eq!(w.on_poll(true, t0 + 220 * MS), PollVerdict::Healthy);
        // Answered once: the grace is over even though time is not.
        assert_eq!(w.on_poll(false, t0 + 230 * MS), PollVerdict::Failing(1));
    }

    #[test]
    fn restarts_wait_out_the_cooldown_and_stop_at_the_limit() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(limits(), t0);
        assert_eq!(w.may_restart(t0), RestartVerdict::Restart);
        w.restarted(t0);
        assert_eq!(
            w.may_restart(t0 + 400 * MS),
            RestartVerdict::Cooldown(600 * MS)
        );
        assert_eq!(w.may_restart(t0 + 1000 * MS), RestartVerdict::Restart);
        w.restarted(t0 + 1000 * MS);
        assert_eq!(w.may_restart(t0 + 2500 * MS), RestartVerdict::GiveUp);
        assert!(w.gave_up());
        // Even once the window has passed: giving up is final.
        assert_eq!(w.may_restart(t0 + 60_000 * MS), RestartVerdict::GaveUp);
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(limits(), t0);
        w.restarted(t0);
        w.restarted(t0 + 1000 * MS);
        assert_eq!(w.may_restart(t0 + 10_500 * MS), RestartVerdict::Restart);
        assert_eq!(w.restarts_in_window(), 1);
    }

    #[test]
    fn duplicates_are_dropped_within_the_period_and_counted_in_the_next_alert() {
        let t0 = Instant::now();
        let mut g = AlertGate::new(1000 * MS, 10, 60_000 * MS);
        let warn = Severity::Warning;
        assert_eq!(
            g.admit("unhealthy", warn, t0),
            GateDecision::Send { suppressed: 0 }
        );
        assert_eq!(
            g.admit("unhealthy", warn, t0 + 500 * MS),
            GateDecision::Duplicate
        );
        assert_eq!(
            g.admit("unhealthy", warn, t0 + 999 * MS),
            GateDecision::Duplicate
        );
        assert_eq!(
            g.admit("recovered", warn, t0 + 999 * MS),
            GateDecision::Send { suppressed: 2 }
        );
        assert_eq!(
            g.admit("unhealthy", warn, t0 + 1000 * MS),
            GateDecision::Send { suppressed: 0 }
        );
    }

    #[test]
    fn the_rate_limit_holds_except_for_critical_alerts() {
        let t0 = Instant::now();
        let mut g = AlertGate::new(Duration::ZERO, 2, 1000 * MS);
        let warn = Severity::Warning;
        assert!(matches!(g.admit("a", warn, t0), GateDecision::Send { .. }));
        assert!(matches!(g.admit("b", warn, t0), GateDecision::Send { .. }));
        assert_eq!(g.admit("c", warn, t0 + 10 * MS), GateDecision::RateLimited);
        assert_eq!(
            g.admit("gave_up", Severity::Critical, t0 + 20 * MS),
            GateDecision::Send { suppressed: 1 }
        );
        assert_eq!(g.admit("d", warn, t0 + 500 * MS), GateDecision::RateLimited);
        assert_eq!(
            g.admit("d", warn, t0 + 1000 * MS),
            GateDecision::Send { suppressed: 1 },
            "the window moved on"
        );
    }
}
