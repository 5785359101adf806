//! The kernel: the handles every actor shares ([`Kernel`]) and the running
//! supervision tree ([`Tree`]) with its health sweep and staged shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use prometheus::Registry;
use tracing::{error, info};

use crate::events::{Event, Events};
use crate::health::{aggregate, Check, Status};
use crate::metrics::KernelMetrics;
use crate::shutdown::{
    millis, ActorReport, Shutdown, ShutdownReason, ShutdownReport, Stage, StageReport,
};
use crate::supervision::{
    panic_message, AddChild, AnyChildSpec, CollectHealth, CrashChild, RemoveChild, RestartChild,
    Restarted, ShutdownPlan, StopStage, SupervisionError, Supervisor, SupervisorSpec, Terminate,
};

/// Default deadline for an actor's health answer.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of recent events the bus keeps.
pub const DEFAULT_EVENT_CAPACITY: usize = 1000;
/// Extra time given to the tree's own bookkeeping beyond actor timeouts.
const BOOKKEEPING_MARGIN: Duration = Duration::from_millis(250);

/// Kernel settings that come from config.
#[derive(Clone, Debug)]
pub struct KernelSettings {
    /// Deadline for an actor's health answer.
    pub health_timeout: Duration,
    /// How many recent events the bus keeps.
    pub event_capacity: usize,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            event_capacity: DEFAULT_EVENT_CAPACITY,
        }
    }
}

/// The handles every supervised actor may need. Cheap to clone; handed to
/// each factory through `ChildCtx::kernel`.
#[derive(Clone)]
pub struct Kernel {
    /// The internal event bus.
    pub events: Events,
    /// The kernel's metrics and the process's registry.
    pub metrics: Arc<KernelMetrics>,
    /// Asks for, and tells about, the staged shutdown.
    pub shutdown: Shutdown,
    /// Deadline for an actor's health answer.
    pub health_timeout: Duration,
    /// Every actor name in the tree; names key `/health/{name}`.
    names: Arc<Mutex<HashSet<String>>>,
}

impl Kernel {
    /// A kernel whose metrics go to `registry`.
    ///
    /// # Errors
    /// When the registry already holds metrics of the kernel's names.
    pub fn new(
        registry: Registry,
        shutdown: Shutdown,
        settings: &KernelSettings,
    ) -> prometheus::Result<Self> {
        let metrics = Arc::new(KernelMetrics::new(registry)?);
        Ok(Self {
            events: Events::new(settings.event_capacity, metrics.clone()),
            metrics,
            shutdown,
            health_timeout: settings.health_timeout,
            names: Arc::default(),
        })
    }

    /// Claims every name or none of them.
    pub(crate) fn claim_names(&self, names: &[String]) -> Result<(), SupervisionError> {
        let mut taken = self.names.lock();
        let mut seen = HashSet::new();
        for name in names {
            if taken.contains(name) || !seen.insert(name) {
                return Err(SupervisionError::DuplicateName(name.clone()));
            }
        }
        taken.extend(names.iter().cloned());
        Ok(())
    }

    /// Frees a name once its actor has left the tree.
    pub(crate) fn release_name(&self, name: &str) {
        self.names.lock().remove(name);
    }
}

/// The whole tree's health at one instant.
#[derive(Clone, Debug)]
pub struct TreeHealth {
    /// The fold of every check.
    pub status: Status,
    /// Whether the node may take traffic (no critical actor unhealthy).
    pub ready: bool,
    /// Every actor's check, in tree order.
    pub checks: Vec<Check>,
}

/// A running supervision tree.
pub struct Tree {
    root: Addr<Supervisor>,
    root_name: String,
    kernel: Kernel,
    /// Statuses seen by the previous sweep, to publish `HealthChanged`.
    last_seen: Mutex<HashMap<String, Status>>,
}

impl Tree {
    /// Starts the tree on the current arbiter. The root is watched like any
    /// child: should it ever die, the process shuts down with a non-zero exit.
    ///
    /// The children start once the current arbiter next runs; await
    /// [`Tree::health`] to wait until every actor has started and answered.
    ///
    /// # Errors
    /// When two actors in `spec` share a name.
    pub fn start(kernel: &Kernel, spec: SupervisorSpec) -> Result<Self, SupervisionError> {
        kernel.claim_names(&spec.names())?;
        let root_name = spec.name().to_owned();
        let ctx = Context::new();
        let root = ctx.address();
        let task = actix_rt::spawn(ctx.into_future(Supervisor::new(spec, kernel.clone(), None)));
        let shutdown = kernel.shutdown.clone();
        let name = root_name.clone();
        actix_rt::spawn(async move {
            if let Err(e) = task.await {
                let reason = if e.is_panic() {
                    format!("panicked: {}", panic_message(&*e.into_panic()))
                } else {
                    "aborted".to_owned()
                };
                error!(supervisor = %name, reason = %reason, "root supervisor died");
                shutdown.request(ShutdownReason::Escalation {
                    supervisor: name,
                    reason,
                });
            }
        });
        Ok(Self {
            root,
            root_name,
            kernel: kernel.clone(),
            last_seen: Mutex::default(),
        })
    }

    /// The root supervisor's address.
    pub fn root(&self) -> &Addr<Supervisor> {
        &self.root
    }

    /// The kernel handles this tree was started with.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Asks every actor for its health, waits at most the health timeout,
    /// updates the health metrics and publishes `HealthChanged` for changes.
    pub async fn health(&self) -> TreeHealth {
        let deadline = tokio::time::Instant::now() + self.kernel.health_timeout;
        let answer = tokio::time::timeout_at(
            deadline + BOOKKEEPING_MARGIN,
            self.root.send(CollectHealth { deadline }),
        )
        .await;
        let checks = match answer {
            Ok(Ok(checks)) => checks,
            _ => vec![Check {
                name: self.root_name.clone(),
                status: Status::Unhealthy,
                critical: true,
                supervisor: String::new(),
                restarts: 0,
                last_failure: None,
                uptime_s: 0.0,
                latency_ms: millis(self.kernel.health_timeout) as f64,
                details: [("reason".to_owned(), "root supervisor did not answer".into())]
                    .into_iter()
                    .collect(),
            }],
        };
        self.kernel.metrics.record_health(&checks);
        self.publish_changes(&checks);
        TreeHealth {
            status: aggregate(&checks),
            ready: crate::health::ready(&checks),
            checks,
        }
    }

    fn publish_changes(&self, checks: &[Check]) {
        let mut last = self.last_seen.lock();
        for check in checks {
            let before = last.insert(check.name.clone(), check.status);
            if before != Some(check.status) {
                self.kernel.events.publish(Event::HealthChanged {
                    actor: check.name.clone(),
                    from: before,
                    to: check.status,
                });
            }
        }
    }

    /// Adds a child to the supervisor named `supervisor` (the root if `None`)
    /// while the tree runs.
    ///
    /// # Errors
    /// A duplicate name, a missing supervisor, or a shutdown in progress.
    pub async fn add_child(
        &self,
        supervisor: &Addr<Supervisor>,
        spec: impl Into<AnyChildSpec>,
    ) -> Result<(), SupervisionError> {
        supervisor
            .send(AddChild { spec: spec.into() })
            .await
            .map_err(|_| SupervisionError::SupervisorDown(self.root_name.clone()))?
    }

    /// Stops and removes the child `name` of `supervisor`.
    ///
    /// # Errors
    /// No such child, or the supervisor is down.
    pub async fn remove_child(
        &self,
        supervisor: &Addr<Supervisor>,
        name: &str,
    ) -> Result<crate::shutdown::Outcome, SupervisionError> {
        supervisor
            .send(RemoveChild {
                name: name.to_owned(),
            })
            .await
            .map_err(|_| SupervisionError::SupervisorDown(self.root_name.clone()))?
    }

    /// Restarts the actor `name`, wherever it is in the tree: a graceful
    /// stop bounded by its shutdown timeout, then a start through its
    /// supervisor (see [`RestartChild`]). Counts in its restarts and
    /// publishes `ActorRestarted`.
    ///
    /// # Errors
    /// `NoSuchChild` for an unknown name; `NotApplicable` for the root or an
    /// actor that is stopping; `ShuttingDown`; `SupervisorDown`.
    pub async fn restart(&self, name: &str) -> Result<Restarted, SupervisionError> {
        if name == self.root_name {
            return Err(SupervisionError::NotApplicable {
                name: name.to_owned(),
                reason: "the root has no supervisor; restart the process instead".into(),
            });
        }
        self.root
            .send(RestartChild {
                name: name.to_owned(),
            })
            .await
            .map_err(|_| SupervisionError::SupervisorDown(self.root_name.clone()))?
    }

    /// Makes the actor `name` panic inside its own context with `reason`
    /// (chaos), wherever it is in the tree; its supervisor then applies its
    /// policy as for any panic. Answers once the request is delivered.
    ///
    /// # Errors
    /// `NoSuchChild` for an unknown name; `NotApplicable` for a supervisor or
    /// an actor that is not running; `SupervisorDown`.
    pub async fn crash(&self, name: &str, reason: &str) -> Result<(), SupervisionError> {
        if name == self.root_name {
            return Err(SupervisionError::NotApplicable {
                name: name.to_owned(),
                reason: "it is a supervisor; crash one of its children".into(),
            });
        }
        self.root
            .send(CrashChild {
                name: name.to_owned(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(|_| SupervisionError::SupervisorDown(self.root_name.clone()))?
    }

    /// Runs the staged shutdown: every stage in order, the actors of a stage
    /// in parallel, each bounded by its own timeout. Logs the report as one
    /// event and returns it. Takes at most the sum of the stages' longest
    /// timeouts (plus a little bookkeeping).
    pub async fn shutdown(&self, reason: ShutdownReason) -> ShutdownReport {
        let began = Instant::now();
        self.kernel.shutdown.begin();
        info!(reason = %reason, "shutdown started");
        self.kernel.events.publish(Event::ShutdownStarted {
            reason: reason.clone(),
        });
        let plan = tokio::time::timeout(BOOKKEEPING_MARGIN * 4, self.root.send(ShutdownPlan))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut stages = Vec::new();
        let mut actors: Vec<ActorReport> = Vec::new();
        for stage in Stage::ORDER {
            let bound = plan
                .iter()
                .filter(|(_, s, _)| *s == stage)
                .map(|(_, _, t)| *t)
                .max()
                .unwrap_or_default();
            let started = Instant::now();
            let reports = tokio::time::timeout(
                bound + BOOKKEEPING_MARGIN,
                self.root.send(StopStage { stage, bound }),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            let ms = millis(started.elapsed());
            info!(stage = %stage, ms, actors = reports.len(), "shutdown stage done");
            self.kernel
                .events
                .publish(Event::ShutdownStage { stage, ms });
            stages.push(StageReport {
                stage,
                ms,
                bound_ms: millis(bound),
            });
            actors.extend(reports);
        }
        let _ = tokio::time::timeout(BOOKKEEPING_MARGIN, self.root.send(Terminate)).await;
        let total = began.elapsed();
        self.kernel
            .metrics
            .shutdown_duration
            .observe(total.as_secs_f64());
        let report = ShutdownReport {
            exit_code: reason.exit_code(),
            reason,
            bound_ms: stages.iter().map(|s| s.bound_ms).sum(),
            stages,
            actors,
            total_ms: millis(total),
        };
        let json = serde_json::to_string(&report.actors).unwrap_or_default();
        info!(
            reason = %report.reason,
            exit_code = report.exit_code,
            total_ms = report.total_ms,
            bound_ms = report.bound_ms,
            clean = report.clean(),
            actors = %json,
            "shutdown report"
        );
        report
    }
}
