//! The `printers` actor: watches 3D printers through the OctoPrint REST API
//! and broadcasts their state changes to the system room `$printers`.
//!
//! A folder: this file (settings, states, the handle and what it keeps),
//! `octoprint` (the REST client), `actor` (polls, health) and `commands`
//! (the `printers.` RPC methods, see [`commands`]).
//!
//! Owns: one poll timer per configured printer, and the polls in flight.
//! Each printer's last state, last-seen time and failure count live in the
//! [`Printers`] handle, outside the actor.
//! Answers: [`Rpc`](crate::handlers::Rpc) for the methods of [`commands`]
//! (list, status, pause, resume, cancel); `/health/printers` shows the printer
//! count, whether monitoring is active, and per printer its state, progress
//! and last-seen time (never its API key).
//!
//! A poll: `GET {url}/api/printer` and, while a job runs, `GET {url}/api/job`,
//! with the `X-Api-Key` header, each bounded by `timeout`. Its outcome is a
//! state:
//!
//! | state | when |
//! |---|---|
//! | `offline` | no answer (refused, timed out, 5xx), or OctoPrint has no printer connected (409, flags closed) |
//! | `idle` | operational, not printing |
//! | `printing` | printing; with `progress` (%) and `file` from `/api/job` |
//! | `paused` | paused or pausing mid-print; with `progress` and `file` |
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

mod actor;
pub mod commands;
mod octoprint;

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::clock::now_rfc3339;
use crate::db::DbUrl;
use crate::lease::Lease;
use crate::rooms::Rooms;
use crate::settings::{at_least, check_endpoints, Secret, SettingError};
use crate::shutdown::Stage;
use crate::supervision::ChildSpec;
use crate::tls::ClientTls;

pub use actor::PrintersActor;
pub use commands::PREFIX;
use octoprint::{Device, OctoPrint};

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
    /// Printing.
    Printing,
    /// Paused (or pausing) mid-print.
    Paused,
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
            PrinterState::Paused => "paused",
            PrinterState::Error => "error",
        }
    }

    const ALL: [PrinterState; 5] = [
        PrinterState::Offline,
        PrinterState::Idle,
        PrinterState::Printing,
        PrinterState::Paused,
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
    octoprint: OctoPrint,
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
                "1 for the state each printer is in (offline, idle, printing, paused, error).",
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
        let octoprint = OctoPrint::new(tls, settings.timeout())?;
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
                octoprint,
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

    /// The printer named `name`.
    fn index(&self, name: &str) -> Option<usize> {
        self.settings.devices.iter().position(|d| d.name == name)
    }

    /// Where printer `idx` is, and its key.
    fn device(&self, idx: usize) -> Device {
        let c = &self.settings.devices[idx];
        Device {
            url: c.url.expose().trim_end_matches('/').to_owned(),
            key: c.api_key.expose().to_owned(),
        }
    }

    /// One poll of printer `idx`; never fails, an error is a state.
    async fn observe(self: Arc<Self>, idx: usize) -> Observation {
        self.octoprint.observe(&self.device(idx)).await
    }

    /// Printer `idx`'s status from its last recorded poll, if it had one.
    fn last_status(&self, idx: usize) -> Option<Value> {
        let printers = self.printers.lock();
        let p = &printers[idx];
        let current = p.current.as_ref()?;
        Some(status(&p.config.name, current, p.last_seen.as_deref()))
    }

    /// Records a poll's outcome, broadcasts a change, and answers the
    /// printer's status.
    fn record(&self, idx: usize, obs: Observation) -> Value {
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
            let mut change = status(&name, &obs, p.last_seen.as_deref());
            change["previous"] = json!(previous);
            change["at"] = json!(now_rfc3339());
            super::broadcast(&self.rooms, ROOM, &change);
        }
        let answer = status(&name, &obs, p.last_seen.as_deref());
        p.current = Some(obs);
        answer
    }

    /// Arms printer `idx`'s next poll: `interval` while it answers, with
    /// back-off while it does not; answers the delay.
    fn schedule(&self, idx: usize) -> Duration {
        let mut printers = self.printers.lock();
        let p = &mut printers[idx];
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

/// A printer's status, as `$printers` and the RPC methods show it.
fn status(name: &str, obs: &Observation, last_seen: Option<&str>) -> Value {
    json!({
        "printer": name,
        "state": obs.state,
        "progress": obs.progress,
        "file": obs.file,
        "print_time_left_s": obs.time_left_s,
        "message": obs.message,
        "last_seen": last_seen,
    })
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
