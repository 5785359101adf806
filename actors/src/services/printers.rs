//! The `printers` actor: watches 3D printers through the OctoPrint REST API
//! and broadcasts their state changes to the system room `$printers`.
//!
//! Owns: one poll timer per configured printer, and the polls in flight.
//! Each printer's last state, last-seen time and failure count live in the
//! [`Printers`] handle, outside the actor.
//! Answers: no messages of its own; `/health/printers` shows the printer
//! count, whether monitoring is active, and per printer its state, progress
//! and last-seen time (never its API key).
//!
//! A poll: `GET {url}/api/printer` and, while printing, `GET {url}/api/job`,
//! with the `X-Api-Key` header, each bounded by `timeout`. Its outcome is a
//! state:
//!
//! | state | when |
//! |---|---|
//! | `offline` | no answer (refused, timed out, 5xx), or OctoPrint has no printer connected (409, flags closed) |
//! | `idle` | operational, not printing |
//! | `printing` | printing, paused or pausing; with `progress` (%) and `file` from `/api/job` |
//! | `error` | the printer reports an error, or OctoPrint rejects the API key (401/403) |
//!
//! A change (another state, progress moved by 0.1 % or more, another file,
//! another error) is broadcast to `$printers` as
//! `{"printer", "state", "previous", "progress", "file", "print_time_left_s", "message", "last_seen", "at"}`.
//! Each printer is polled on its own timer: the next poll is armed when the
//! previous one ends, `interval` later while it answers, and with doubling
//! back-off (capped at `max_backoff`, +/-10 % jitter) while it is offline or
//! refuses the key. Polls are independent futures with their own timeouts,
//! so a printer that hangs delays nobody but itself.
//!
//! Restart policy: permanent, non-critical, stage `services`.
//! Lost on a crash: the polls in flight. The last known states survive, so
//! the next incarnation broadcasts only real changes.
//! With no printer configured the actor is idle and healthy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::clock::now_rfc3339;
use crate::db::DbUrl;
use crate::health::{Health, HealthReply};
use crate::lease::Lease;
use crate::rooms::Rooms;
use crate::settings::{at_least, check_endpoints, Secret, SettingError};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};
use crate::tls::ClientTls;

/// The system room state changes go to.
pub const ROOM: &str = "$printers";

/// The `printers` settings (config `[printers]`), as the file spells them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrintersSettings {
    /// Bound on one request to a printer.
    pub timeout_ms: u64,
    /// Cap of the back-off while a printer is offline.
    pub max_backoff_ms: u64,
    /// The printers (`[[printers.devices]]`); none leaves the service idle.
    pub devices: Vec<PrinterSettings>,
}

/// One `[[printers.devices]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterSettings {
    /// Unique name.
    pub name: String,
    /// OctoPrint's base URL, `http[s]://host[:port]`.
    pub url: DbUrl,
    /// OctoPrint's API key (`X-Api-Key`); a secret.
    pub api_key: Secret,
    /// Time between two polls while the printer answers.
    #[serde(default = "default_printer_interval_ms")]
    pub interval_ms: u64,
}

fn default_printer_interval_ms() -> u64 {
    5000
}

impl PrintersSettings {
    /// Checks ranges, names, URLs and keys (never showing a key).
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), SettingError> {
        check_endpoints(
            "printers.devices",
            self.devices.iter().map(|p| (p.name.as_str(), &p.url)),
        )?;
        at_least("printers.timeout_ms", self.timeout_ms, 1)?;
        for (i, p) in self.devices.iter().enumerate() {
            at_least(
                &format!("printers.devices[{i}].interval_ms"),
                p.interval_ms,
                1,
            )?;
            let key = p.api_key.expose();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SettingError::key(
                    &format!("printers.devices[{i}].api_key"),
                    "must be a non-empty key of visible ASCII characters",
                ));
            }
        }
        Ok(())
    }

    /// Bound on one request to a printer (connect included).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Cap of the back-off while a printer is offline.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }
}

impl PrinterSettings {
    /// Time between two polls while the printer answers.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

/// What a printer is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrinterState {
    /// Not reachable, or no printer connected to OctoPrint.
    Offline,
    /// Operational and not printing.
    Idle,
    /// Printing (or paused mid-print).
    Printing,
    /// The printer reports an error, or the API key is refused.
    Error,
}

impl PrinterState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PrinterState::Offline => "offline",
            PrinterState::Idle => "idle",
            PrinterState::Printing => "printing",
            PrinterState::Error => "error",
        }
    }

    const ALL: [PrinterState; 4] = [
        PrinterState::Offline,
        PrinterState::Idle,
        PrinterState::Printing,
        PrinterState::Error,
    ];
}

/// The outcome of one poll.
#[derive(Clone, Debug, PartialEq)]
struct Observation {
    state: PrinterState,
    /// Completion in percent, while printing.
    progress: Option<f64>,
    /// The file being printed.
    file: Option<String>,
    /// Seconds left, as OctoPrint estimates them.
    time_left_s: Option<i64>,
    /// OctoPrint's state text, or why the printer is offline or in error.
    message: String,
    /// Whether OctoPrint answered usefully (no back-off).
    answered: bool,
}

impl Observation {
    fn offline(message: impl Into<String>) -> Self {
        Self {
            state: PrinterState::Offline,
            progress: None,
            file: None,
            time_left_s: None,
            message: message.into(),
            answered: false,
        }
    }

    /// Whether `self` differs from `before` enough to broadcast.
    fn differs(&self, before: Option<&Observation>) -> bool {
        let Some(before) = before else { return true };
        let tenths = |p: Option<f64>| p.map(|p| (p * 10.0).round() as i64);
        self.state != before.state
            || tenths(self.progress) != tenths(before.progress)
            || self.file != before.file
            || (self.state == PrinterState::Error && self.message != before.message)
    }
}

/// One printer's state, kept across restarts of the actor.
struct Printer {
    config: PrinterSettings,
    /// The last poll's outcome.
    current: Option<Observation>,
    /// When it last answered with a state other than offline, RFC 3339.
    last_seen: Option<String>,
    /// Consecutive polls with no useful answer (drives the back-off).
    failures: u32,
    polls: u64,
    /// When the next poll is due.
    next_poll: Option<Instant>,
}

struct PrinterMetrics {
    state: IntGaugeVec,
    polls: IntCounterVec,
}

/// What the handle shares with every incarnation of the actor.
struct Inner {
    settings: PrintersSettings,
    printers: Mutex<Vec<Printer>>,
    client: reqwest::Client,
    rooms: Rooms,
    metrics: PrinterMetrics,
    /// Whether this node polls (one node at a time does).
    lease: Lease,
}

/// The handle to the printers service; cheap to clone.
#[derive(Clone)]
pub struct Printers {
    inner: Arc<Inner>,
}

/// `/api/printer`, the parts used.
#[derive(Deserialize)]
struct PrinterAnswer {
    state: PrinterStatus,
}

#[derive(Deserialize)]
struct PrinterStatus {
    #[serde(default)]
    text: String,
    flags: Flags,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Flags {
    operational: bool,
    printing: bool,
    paused: bool,
    pausing: bool,
    error: bool,
    closed_or_error: bool,
}

/// `/api/job`, the parts used.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JobAnswer {
    job: Job,
    progress: Progress,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Job {
    file: JobFile,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JobFile {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Progress {
    completion: Option<f64>,
    print_time_left: Option<i64>,
}

impl Printers {
    /// A handle for `settings`, polling with `tls` and broadcasting through
    /// `rooms`; registers `holdfast_printers_state` and
    /// `holdfast_printers_polls_total`.
    ///
    /// # Errors
    /// The metrics are registered already, or the HTTP client cannot be built.
    pub fn new(
        settings: PrintersSettings,
        tls: &ClientTls,
        rooms: Rooms,
        registry: &Registry,
        lease: Lease,
    ) -> Result<Self, String> {
        let state = IntGaugeVec::new(
            Opts::new(
                "holdfast_printers_state",
                "1 for the state each printer is in (offline, idle, printing, error).",
            ),
            &["printer", "state"],
        )
        .map_err(|e| e.to_string())?;
        let polls = IntCounterVec::new(
            Opts::new(
                "holdfast_printers_polls_total",
                "Printer polls, by the state they found.",
            ),
            &["printer", "state"],
        )
        .map_err(|e| e.to_string())?;
        registry
            .register(Box::new(state.clone()))
            .and_then(|_| registry.register(Box::new(polls.clone())))
            .map_err(|e| e.to_string())?;
        let client = tls
            .http_client()
            .connect_timeout(settings.timeout())
            .timeout(settings.timeout())
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let printers = settings
            .devices
            .iter()
            .map(|config| Printer {
                config: config.clone(),
                current: None,
                last_seen: None,
                failures: 0,
                polls: 0,
                next_poll: None,
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                printers: Mutex::new(printers),
                client,
                rooms,
                metrics: PrinterMetrics { state, polls },
                lease,
            }),
        })
    }

    /// The actor's spec: permanent, non-critical, stage `services`.
    pub fn spec(&self) -> ChildSpec<PrintersActor> {
        let inner = self.inner.clone();
        ChildSpec::new("printers", move |_| PrintersActor {
            inner: inner.clone(),
        })
        .critical(false)
        .stage(Stage::Services)
    }

    /// Every printer's state as `/health/printers` shows it.
    pub fn states(&self) -> Value {
        self.inner.states()
    }
}

impl Inner {
    fn states(&self) -> Value {
        let now = Instant::now();
        let printers = self.printers.lock();
        let map: Map<String, Value> = printers
            .iter()
            .map(|p| {
                let c = p.current.as_ref();
                (
                    p.config.name.clone(),
                    json!({
                        "state": c.map(|c| c.state.as_str()),
                        "progress": c.and_then(|c| c.progress),
                        "file": c.and_then(|c| c.file.clone()),
                        "message": c.map(|c| c.message.clone()),
                        "last_seen": p.last_seen,
                        "url": crate::db::redact_url(p.config.url.expose()),
                        "polls": p.polls,
                        "failures": p.failures,
                        "next_poll_ms": p.next_poll.map(|t| t.saturating_duration_since(now).as_millis() as u64),
                    }),
                )
            })
            .collect();
        Value::Object(map)
    }

    /// One poll of printer `idx`; never fails, an error is a state.
    async fn observe(self: Arc<Self>, idx: usize) -> Observation {
        let (url, key) = {
            let printers = self.printers.lock();
            let c = &printers[idx].config;
            (
                c.url.expose().trim_end_matches('/').to_owned(),
                c.api_key.expose().to_owned(),
            )
        };
        let printer: PrinterAnswer = match self.get(&url, "/api/printer", &key).await {
            Ok(Answer::Json(v)) => match serde_json::from_value(v) {
                Ok(p) => p,
                Err(e) => {
                    return Observation {
                        answered: true,
                        ..Observation::offline(format!("unexpected answer from OctoPrint: {e}"))
                    }
                    .with_state(PrinterState::Error)
                }
            },
            Ok(Answer::Status(409)) => {
                return Observation {
                    answered: true,
                    ..Observation::offline("no printer connected to OctoPrint")
                }
            }
            Ok(Answer::Status(s @ (401 | 403))) => {
                return Observation::offline(format!("OctoPrint refused the API key (HTTP {s})"))
                    .with_state(PrinterState::Error)
            }
            Ok(Answer::Status(s)) => {
                return Observation::offline(format!("OctoPrint answered HTTP {s}"))
            }
            Err(e) => return Observation::offline(e),
        };
        let PrinterStatus { text, flags } = printer.state;
        let mut obs = Observation {
            state: PrinterState::Idle,
            progress: None,
            file: None,
            time_left_s: None,
            message: text,
            answered: true,
        };
        if flags.error {
            obs.state = PrinterState::Error;
        } else if flags.printing || flags.paused || flags.pausing {
            obs.state = PrinterState::Printing;
            // Without the job (it failed or timed out), still printing, progress unknown.
            if let Ok(Answer::Json(v)) = self.get(&url, "/api/job", &key).await {
                let job: JobAnswer = serde_json::from_value(v).unwrap_or_default();
                obs.progress = job.progress.completion;
                obs.file = job.job.file.name;
                obs.time_left_s = job.progress.print_time_left;
            }
        } else if !flags.operational || flags.closed_or_error {
            obs.state = PrinterState::Offline;
        }
        obs
    }

    /// GETs `base + path` with the key; a 2xx answer parsed as JSON.
    async fn get(&self, base: &str, path: &str, key: &str) -> Result<Answer, String> {
        let mut value = reqwest::header::HeaderValue::from_str(key)
            .map_err(|_| "the API key is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        let response = self
            .client
            .get(format!("{base}{path}"))
            .header("X-Api-Key", value)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                if e.is_timeout() {
                    format!(
                        "no answer within {} ms",
                        self.settings.timeout().as_millis()
                    )
                } else {
                    format!("unreachable: {}", super::error_chain(&e))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Answer::Status(status.as_u16()));
        }
        response
            .json::<Value>()
            .await
            .map(Answer::Json)
            .map_err(|e| format!("bad answer to {path}: {}", e.without_url()))
    }

    /// Records a poll's outcome, broadcasts a change, and answers the delay
    /// before the next poll.
    fn record(&self, idx: usize, obs: Observation) -> Duration {
        let mut printers = self.printers.lock();
        let p = &mut printers[idx];
        let name = p.config.name.clone();
        p.polls += 1;
        self.metrics
            .polls
            .with_label_values(&[&name, obs.state.as_str()])
            .inc();
        if obs.state != PrinterState::Offline {
            p.last_seen = Some(now_rfc3339());
        }
        let backoff = obs.state == PrinterState::Offline || !obs.answered;
        p.failures = if backoff {
            p.failures.saturating_add(1)
        } else {
            0
        };
        if obs.differs(p.current.as_ref()) {
            let previous = p.current.as_ref().map(|c| c.state);
            match (previous, obs.state) {
                (Some(before), now) if before != now && now == PrinterState::Offline => {
                    warn!(printer = %name, reason = %obs.message, "printer offline")
                }
                (before, now) if before != Some(now) => {
                    info!(printer = %name, from = before.map_or("none", PrinterState::as_str), to = now.as_str(), "printer state changed")
                }
                _ => debug!(printer = %name, progress = ?obs.progress, "printer progress"),
            }
            for s in PrinterState::ALL {
                self.metrics
                    .state
                    .with_label_values(&[&name, s.as_str()])
                    .set(i64::from(s == obs.state));
            }
            super::broadcast(
                &self.rooms,
                ROOM,
                &json!({
                    "printer": name,
                    "state": obs.state,
                    "previous": previous,
                    "progress": obs.progress,
                    "file": obs.file,
                    "print_time_left_s": obs.time_left_s,
                    "message": obs.message,
                    "last_seen": p.last_seen,
                    "at": now_rfc3339(),
                }),
            );
        }
        p.current = Some(obs);
        let interval = p.config.interval();
        let delay = if p.failures == 0 {
            interval
        } else {
            // interval · 2^failures, capped, ± 10 %.
            Backoff {
                min: interval.saturating_mul(2),
                max: self.settings.max_backoff().max(interval),
                jitter: 0.1,
                reset_after: Duration::ZERO,
            }
            .random_retry(p.failures)
        };
        p.next_poll = Some(Instant::now() + delay);
        delay
    }
}

impl Observation {
    fn with_state(mut self, state: PrinterState) -> Self {
        self.state = state;
        self
    }
}

/// A printer's answer: JSON on 2xx, else the status.
enum Answer {
    Json(Value),
    Status(u16),
}

/// The printers actor. See the module docs.
pub struct PrintersActor {
    /// Printers, client, rooms and metrics; shared with [`Printers`].
    inner: Arc<Inner>,
}

impl PrintersActor {
    fn poll(&mut self, idx: usize, ctx: &mut Context<Self>) {
        if !self.inner.lease.held() {
            // Standby: another node polls; look again in one interval.
            let every = self.inner.printers.lock()[idx].config.interval();
            ctx.run_later(every, move |act, ctx| act.poll(idx, ctx));
            return;
        }
        ctx.spawn(
            self.inner
                .clone()
                .observe(idx)
                .into_actor(self)
                .map(move |obs, act, ctx| {
                    let delay = act.inner.record(idx, obs);
                    ctx.run_later(delay, move |act, ctx| act.poll(idx, ctx));
                }),
        );
    }
}

impl Actor for PrintersActor {
    type Context = Context<Self>;

    /// Polls every printer now; each poll arms the next. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let n = self.inner.settings.devices.len();
        if n == 0 {
            debug!("no printers configured; idle");
            return;
        }
        info!(printers = n, "monitoring printers");
        for idx in 0..n {
            self.poll(idx, ctx);
        }
    }
}

impl Child for PrintersActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let (count, down) = {
            let printers = self.inner.printers.lock();
            let down: Vec<String> = printers
                .iter()
                .filter(|p| {
                    p.current.as_ref().is_some_and(|c| {
                        matches!(c.state, PrinterState::Offline | PrinterState::Error)
                    })
                })
                .map(|p| p.config.name.clone())
                .collect();
            (printers.len(), down)
        };
        let h = if down.is_empty() {
            Health::healthy()
        } else {
            Health::degraded(format!("offline or in error: {}", down.join(", ")))
        };
        let h = h
            .with("printers", count)
            .with("monitoring", count > 0)
            .with("states", self.inner.states());
        self.inner.lease.describe(h).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: PrinterState, progress: Option<f64>) -> Observation {
        Observation {
            state,
            progress,
            file: None,
            time_left_s: None,
            message: String::new(),
            answered: true,
        }
    }

    #[test]
    fn a_change_is_a_new_state_or_progress_of_a_tenth_of_a_percent() {
        let idle = obs(PrinterState::Idle, None);
        assert!(idle.differs(None));
        assert!(!idle.differs(Some(&idle)));
        let p1 = obs(PrinterState::Printing, Some(10.0));
        assert!(p1.differs(Some(&idle)));
        assert!(!obs(PrinterState::Printing, Some(10.01)).differs(Some(&p1)));
        assert!(obs(PrinterState::Printing, Some(10.1)).differs(Some(&p1)));
    }

    #[test]
    fn the_api_key_never_prints() {
        let key = Secret::new("s3cr3t");
        assert_eq!(format!("{key:?}"), "\"[redacted]\"");
        let config = PrinterSettings {
            name: "p".into(),
            url: serde_json::from_value(serde_json::json!("http://x")).unwrap(),
            api_key: key,
            interval_ms: 1000,
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
