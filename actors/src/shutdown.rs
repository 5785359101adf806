//! Staged shutdown: the stages, the one control path every stop request takes,
//! and the report that says who stopped, who overran and how long it took.
//!
//! SIGTERM, SIGINT, an admin request and a root-supervisor escalation all
//! become one [`ControlEvent`] on the channel behind [`Shutdown`]; whoever owns
//! the process (the server's main loop) receives it and runs the stages. The
//! draining flag flips the moment the request is made, before any stage runs,
//! so readiness answers 503 from the first instant.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Shutdown stages, run in this order. Actors of one stage stop in parallel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Stop accepting new work; readiness is already 503.
    Intake,
    /// Close client connections (WebSockets get `draining`, then 1001).
    Connections,
    /// Domain services (printers, files, trending, user actors).
    Services,
    /// Core actors: event bus, scheduler, session store.
    Core,
    /// Storage last, so everything above can still flush: database, Redis.
    Storage,
}

impl Stage {
    /// Every stage in shutdown order.
    pub const ORDER: [Stage; 5] = [
        Stage::Intake,
        Stage::Connections,
        Stage::Services,
        Stage::Core,
        Stage::Storage,
    ];

    /// The lowercase name used in logs and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Intake => "intake",
            Stage::Connections => "connections",
            Stage::Services => "services",
            Stage::Core => "core",
            Stage::Storage => "storage",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the process is shutting down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ShutdownReason {
    /// An operating-system signal (SIGTERM, SIGINT).
    Signal {
        /// The signal's name.
        signal: String,
    },
    /// Asked for in-process (admin API, tests, an embedding application).
    Requested {
        /// Who asked, for the log.
        by: String,
    },
    /// The root supervisor exceeded its restart intensity.
    Escalation {
        /// The supervisor that gave up.
        supervisor: String,
        /// The failure that tipped it over.
        reason: String,
    },
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Signal { signal } => write!(f, "signal {signal}"),
            ShutdownReason::Requested { by } => write!(f, "requested by {by}"),
            ShutdownReason::Escalation { supervisor, reason } => {
                write!(f, "escalation by supervisor '{supervisor}': {reason}")
            }
        }
    }
}

/// Exit code after a shutdown caused by an escalation (EX_SOFTWARE), so that
/// an outer watchdog (systemd `Restart=on-failure`, Kubernetes) restarts us.
pub const EXIT_ESCALATION: i32 = 70;

impl ShutdownReason {
    /// The process exit code this shutdown ends with: 0 for a requested or
    /// signalled stop, [`EXIT_ESCALATION`] after an escalation.
    pub fn exit_code(&self) -> i32 {
        match self {
            ShutdownReason::Escalation { .. } => EXIT_ESCALATION,
            _ => 0,
        }
    }
}

/// Every control event takes this one path, whatever its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlEvent {
    /// Begin the staged shutdown.
    Shutdown(ShutdownReason),
}

/// The shutdown handle: cheap to clone, handed to whoever needs to ask for a
/// shutdown or to know that one has begun. Never a global.
#[derive(Clone, Debug)]
pub struct Shutdown {
    /// Flipped on the first request; readiness reads it.
    draining: Arc<AtomicBool>,
    /// Observers (`wait`) wake when this turns true.
    begun: watch::Sender<bool>,
    /// Carries the request to the owner of the process.
    events: mpsc::UnboundedSender<ControlEvent>,
}

/// The receiving end of [`Shutdown`], owned by the process's main loop.
#[derive(Debug)]
pub struct ControlEvents {
    rx: mpsc::UnboundedReceiver<ControlEvent>,
}

impl ControlEvents {
    /// The next control event; `None` once every [`Shutdown`] handle is gone.
    pub async fn recv(&mut self) -> Option<ControlEvent> {
        self.rx.recv().await
    }
}

impl Shutdown {
    /// A new handle and the receiver its requests go to.
    pub fn new() -> (Self, ControlEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (begun, _) = watch::channel(false);
        let handle = Self {
            draining: Arc::new(AtomicBool::new(false)),
            begun,
            events: tx,
        };
        (handle, ControlEvents { rx })
    }

    /// Asks for a shutdown. The first request flips readiness at once; later
    /// ones are still delivered (the owner decides, e.g. a second SIGINT exits).
    pub fn request(&self, reason: ShutdownReason) {
        self.draining.store(true, Ordering::SeqCst);
        self.begun.send_replace(true);
        // The receiver is gone only once the process is already exiting.
        let _ = self.events.send(ControlEvent::Shutdown(reason));
    }

    /// Marks the shutdown as begun without asking the process owner to run
    /// it (the owner calls this when it starts running the stages itself).
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.begun.send_replace(true);
    }

    /// True from the first shutdown request on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once a shutdown has been requested.
    pub async fn begun(&self) {
        let mut rx = self.begun.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|b| *b).await;
    }
}

/// How one actor's stop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It stopped within its timeout.
    Stopped,
    /// It overran its timeout and was abandoned.
    TimedOut,
    /// It panicked while stopping, or was already dead.
    Failed,
}

/// One line of the shutdown report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActorReport {
    /// The actor's name.
    pub actor: String,
    /// The supervisor that owned it.
    pub supervisor: String,
    /// The stage it stopped in.
    pub stage: Stage,
    /// How its stop ended.
    pub outcome: Outcome,
    /// Milliseconds from the stop request to the outcome.
    pub ms: u64,
}

/// One stage's duration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Milliseconds the stage took.
    pub ms: u64,
    /// The longest shutdown timeout among its actors: the stage's bound.
    pub bound_ms: u64,
}

/// The whole shutdown, logged as one structured event when it ends.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShutdownReport {
    /// Why it ran.
    pub reason: ShutdownReason,
    /// The exit code the process ends with.
    pub exit_code: i32,
    /// Every stage, in order.
    pub stages: Vec<StageReport>,
    /// Every actor, in stop order.
    pub actors: Vec<ActorReport>,
    /// Milliseconds for the whole run.
    pub total_ms: u64,
    /// The sum of the stages' bounds: the run can never take longer.
    pub bound_ms: u64,
}

impl ShutdownReport {
    /// The report's line for `actor`, if it was stopped.
    pub fn actor(&self, actor: &str) -> Option<&ActorReport> {
        self.actors.iter().find(|a| a.actor == actor)
    }

    /// Whether every actor stopped within its timeout.
    pub fn clean(&self) -> bool {
        self.actors.iter().all(|a| a.outcome == Outcome::Stopped)
    }
}

pub(crate) use crate::clock::millis;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_flips_draining_at_once_and_reaches_the_owner() {
        let (shutdown, mut events) = Shutdown::new();
        assert!(!shutdown.is_draining());
        shutdown.request(ShutdownReason::Requested { by: "test".into() });
        assert!(shutdown.is_draining());
        shutdown.begun().await;
        assert_eq!(
            events.recv().await,
            Some(ControlEvent::Shutdown(ShutdownReason::Requested {
                by: "test".into()
            }))
        );
    }

    #[test]
    fn only_escalation_exits_non_zero() {
        assert_eq!(
            ShutdownReason::Signal {
                signal: "SIGTERM".into()
            }
            .exit_code(),
            0
        );
        let esc = ShutdownReason::Escalation {
            supervisor: "root".into(),
            reason: "x".into(),
        };
        assert_eq!(esc.exit_code(), EXIT_ESCALATION);
    }
}
