//! The supervisor actor: starts its children in order, restarts them by its
//! strategy, gives up and escalates past its restart intensity, collects their
//! health and stops them stage by stage.
//!
//! A supervisor's own state that must outlive its restart (its list of child
//! specs, including children added at run time) lives in its
//! [`SupervisorSpec`], shared with the factory that rebuilds it. What a
//! restart loses: the restart window and the children's restart counters of
//! that supervisor; never a child's own crash-surviving state, which its
//! factory holds.
//!
//! Restart policy: a supervisor is itself a child of its parent. When it
//! escalates it stops its children (in reverse start order, each bounded by
//! its shutdown timeout) and exits with a failure, so its parent applies its
//! own policy. The root escalates by asking for the staged shutdown, which
//! ends the process with a non-zero exit code.
//!
//! Operators (the admin API) reach any actor by name: [`RestartChild`] (a
//! graceful stop and a start, counted as a restart but not against the
//! intensity) and [`CrashChild`] (a real panic inside the actor, for chaos
//! drills). A supervisor that has no child of that name asks its nested
//! supervisors, so the whole tree is searched from the root.
//!
//! The supervisor's messages live beside it, one concern per file:
//! `health` (collecting the tree's checks), `dynamic` (children added and
//! removed at run time), `stop` (the staged shutdown) and `operator` (the
//! admin API's restart and crash requests).

mod dynamic;
mod health;
mod operator;
mod stop;

pub use dynamic::{AddChild, RemoveChild};
pub use health::CollectHealth;
pub use operator::{CrashChild, RestartChild, Restarted};
pub use stop::{ShutdownPlan, StopStage, Terminate};

use stop::{stop_sequentially, PendingStop};

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::ActorFutureExt;
use actix::prelude::*;
use parking_lot::Mutex;
use tracing::{error, info, warn};

use super::child::{
    AnyChildSpec, Child, ChildCtx, ChildRef, ChildSpec, Exit, Incarnation, StartArgs,
};
use super::policy::{Intensity, RestartType, RestartWindow, Strategy};
use crate::clock::now_rfc3339;
use crate::events::Event;
use crate::health::{aggregate, Failure, Health, HealthReply};
use crate::kernel::Kernel;
use crate::shutdown::{millis, ShutdownReason, Stage};

/// How long a parent waits past a health deadline for a nested supervisor,
/// which answers only after its own children's deadline.
const NESTED_HEALTH_MARGIN: Duration = Duration::from_millis(100);

/// What a supervisor is: a name, a strategy, an intensity and its children.
/// Cloning shares the child list, which is how children added at run time
/// survive the supervisor's own restart.
#[derive(Clone)]
pub struct SupervisorSpec {
    name: String,
    strategy: Strategy,
    intensity: Intensity,
    children: Arc<Mutex<Vec<AnyChildSpec>>>,
    /// Extra figures for this supervisor's own health check.
    details: Option<DetailsFn>,
}

/// Computes extra health details for a supervisor's check.
type DetailsFn = Arc<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

impl SupervisorSpec {
    /// A one-for-one supervisor with the default intensity and no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children: Arc::default(),
            details: None,
        }
    }

    /// Adds figures to this supervisor's own health check (e.g. `/health/rooms`
    /// shows rooms, members and connections).
    pub fn details(
        mut self,
        f: impl Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        self.details = Some(Arc::new(f));
        self
    }

    /// Sets the strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Adds a child, started after the ones added before it.
    pub fn child(self, spec: impl Into<AnyChildSpec>) -> Self {
        self.children.lock().push(spec.into());
        self
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every name in this subtree, this supervisor's included.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        for child in self.children.lock().iter() {
            match child.nested.as_ref() {
                Some(nested) => names.extend(nested.names()),
                None => names.push(child.opts.name.clone()),
            }
        }
        names
    }

    /// This supervisor as a child of another. A nested supervisor is
    /// permanent and critical by default; its shutdown timeout covers
    /// stopping its children one after another.
    pub fn into_child(self) -> ChildSpec<Supervisor> {
        let timeout = self
            .children
            .lock()
            .iter()
            .map(|c| c.opts.shutdown_timeout)
            .sum::<Duration>()
            .max(Duration::from_secs(1));
        let name = self.name.clone();
        let nested = self.clone();
        ChildSpec::new(name, move |cctx: &ChildCtx| {
            Supervisor::new(nested.clone(), cctx.kernel.clone(), Some(cctx.clone()))
        })
        .stage(Stage::Storage)
        .shutdown_timeout(timeout)
        .with_nested(self)
    }
}

/// Why the supervisor itself is stopping a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopPurpose {
    /// A sibling failed and the strategy restarts this one too.
    GroupRestart,
    /// `RemoveChild`: forget it once it is down.
    Remove,
    /// Staged shutdown or escalation: leave it down.
    Final,
    /// `RestartChild`: an operator's restart; started again once it is down.
    Restart,
}

/// Where a child is in its life.
enum ChildState {
    /// An incarnation is running.
    Running(Incarnation),
    /// The supervisor asked it to stop; its exit is expected.
    Stopping(Incarnation, StopPurpose),
    /// Down, to be started again by a pending restart.
    Restarting {
        /// Consecutive failure count this restart answers.
        attempt: u32,
        /// When the restart is due, on tokio's clock: the one its timer
        /// sleeps on (they differ while a test pauses tokio's clock).
        due: tokio::time::Instant,
    },
    /// Down for good.
    Stopped,
}

/// A child as its supervisor tracks it.
struct Entry {
    spec: AnyChildSpec,
    /// Generation of the newest incarnation; exits of older ones are ignored.
    generation: u64,
    state: ChildState,
    /// Restarts since this supervisor started it first.
    restarts: u64,
    /// Failures since the last healthy run; drives the back-off.
    consecutive: u32,
    last_failure: Option<Failure>,
    /// When the running incarnation started.
    started_at: Option<Instant>,
}

/// The supervisor actor. See the module docs.
pub struct Supervisor {
    spec: SupervisorSpec,
    kernel: Kernel,
    /// Children in start order; rest-for-one and reverse-order stops use it.
    children: Vec<Entry>,
    /// Recent restarts, to enforce the intensity.
    window: RestartWindow,
    /// `Some` when nested: where its escalation reason goes for its parent.
    as_child: Option<ChildCtx>,
    /// Set once it escalated; later exits are recorded, never restarted.
    given_up: bool,
}

impl Supervisor {
    pub(crate) fn new(spec: SupervisorSpec, kernel: Kernel, as_child: Option<ChildCtx>) -> Self {
        // The escalation series exists from the start, at 0.
        kernel.metrics.escalations.with_label_values(&[spec.name()]);
        Self {
            spec,
            kernel,
            children: Vec::new(),
            window: RestartWindow::default(),
            as_child,
            given_up: false,
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|e| e.spec.opts.name == name)
    }

    /// Drops the child at `i` for good: from the running list, from the spec
    /// (so that this supervisor's next incarnation does not start it again)
    /// and from the tree's names, its subtree's included.
    fn forget(&mut self, i: usize) {
        let spec = self.children.remove(i).spec;
        let name = &spec.opts.name;
        self.spec.children.lock().retain(|c| &c.opts.name != name);
        let names = spec.nested.as_ref().map(|n| n.names());
        for name in names.as_deref().unwrap_or(std::slice::from_ref(name)) {
            self.kernel.release_name(name);
        }
    }

    /// Appends a child that has never run and starts it.
    fn adopt(&mut self, spec: AnyChildSpec, ctx: &mut Context<Self>) {
        self.children.push(Entry {
            spec,
            generation: 0,
            state: ChildState::Stopped,
            restarts: 0,
            consecutive: 0,
            last_failure: None,
            started_at: None,
        });
        let i = self.children.len() - 1;
        self.start_child(i, ctx);
    }

    /// Starts (or restarts) the child at `i`.
    fn start_child(&mut self, i: usize, ctx: &mut Context<Self>) {
        let supervisor = ctx.address();
        let kernel = self.kernel.clone();
        let entry = &mut self.children[i];
        // Only `start_due` starts a `Restarting` entry; a first start finds it
        // `Stopped`. (`started_at` cannot tell: the exit handler clears it.)
        let restart = matches!(entry.state, ChildState::Restarting { .. });
        if restart {
            entry.generation += 1;
            entry.restarts += 1;
        }
        let arbiter = entry
            .spec
            .opts
            .arbiter
            .clone()
            .unwrap_or_else(Arbiter::current);
        let args = StartArgs {
            generation: entry.generation,
            supervisor,
            arbiter,
            kernel,
        };
        let incarnation = entry.spec.starter.start(&entry.spec.opts, args);
        entry.state = ChildState::Running(incarnation);
        entry.started_at = Some(Instant::now());
        let name = entry.spec.opts.name.clone();
        let restarts = entry.restarts;
        if restart {
            self.kernel
                .metrics
                .actor_restarts
                .with_label_values(&[&name])
                .inc();
            info!(actor = %name, supervisor = %self.spec.name, restarts, "actor restarted");
            self.kernel.events.publish(Event::ActorRestarted {
                actor: name,
                supervisor: self.spec.name.clone(),
                restarts,
            });
        } else {
            // Every actor's series exist from its first start, at 0, so
            // that a rate or an alert over them sees the actor before its
            // first failure.
            let m = &self.kernel.metrics;
            m.actor_restarts.with_label_values(&[&name]);
            m.actor_failures.with_label_values(&[&name]);
            self.kernel.events.publish(Event::ActorStarted {
                actor: name,
                supervisor: self.spec.name.clone(),
            });
        }
    }

    /// Starts every child whose restart is due and still pending.
    fn start_due(&mut self, names: &[String], ctx: &mut Context<Self>) {
        if self.kernel.shutdown.is_draining() || self.given_up {
            return;
        }
        for name in names {
            if let Some(i) = self.index(name) {
                if matches!(self.children[i].state, ChildState::Restarting { .. }) {
                    self.start_child(i, ctx);
                }
            }
        }
    }

    /// Gives up: the root asks for the staged shutdown; a nested supervisor
    /// stops its children and exits with a failure for its parent.
    fn escalate(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.given_up = true;
        let supervisor = self.spec.name.clone();
        error!(supervisor = %supervisor, reason = %reason, "restart intensity exceeded; escalating");
        self.kernel
            .metrics
            .escalations
            .with_label_values(&[&supervisor])
            .inc();
        self.kernel.events.publish(Event::ActorEscalated {
            supervisor: supervisor.clone(),
            reason: reason.clone(),
        });
        match self.as_child.clone() {
            None => self
                .kernel
                .shutdown
                .request(ShutdownReason::Escalation { supervisor, reason }),
            Some(cctx) => {
                cctx.fail(format!("supervisor '{supervisor}' gave up: {reason}"));
                let stops = self.stop_all(StopPurpose::Final);
                ctx.spawn(
                    stop_sequentially(stops)
                        .into_actor(self)
                        .map(|_, _, ctx| ctx.stop()),
                );
            }
        }
    }

    /// Marks every running child as stopping for `purpose` and returns the
    /// stops to run, in reverse start order.
    fn stop_all(&mut self, purpose: StopPurpose) -> Vec<PendingStop> {
        let mut stops = Vec::new();
        for i in (0..self.children.len()).rev() {
            if let Some(stop) = self.begin_stop(i, purpose) {
                stops.push(stop);
            }
        }
        stops
    }

    /// Moves a running child to `Stopping` and returns what awaiting its exit takes.
    fn begin_stop(&mut self, i: usize, purpose: StopPurpose) -> Option<PendingStop> {
        let entry = &mut self.children[i];
        let state = std::mem::replace(&mut entry.state, ChildState::Stopped);
        match state {
            ChildState::Running(inc) | ChildState::Stopping(inc, _) => {
                let stop = PendingStop {
                    name: entry.spec.opts.name.clone(),
                    stage: entry.spec.opts.stage,
                    timeout: entry.spec.opts.shutdown_timeout,
                    incarnation: inc.clone(),
                };
                entry.state = ChildState::Stopping(inc, purpose);
                Some(stop)
            }
            other => {
                entry.state = other;
                None
            }
        }
    }

    /// Restarts `group` (indices in start order) after stopping its running
    /// members, then waits `delay`.
    fn restart_group(
        &mut self,
        group: Vec<usize>,
        attempt: u32,
        delay: Duration,
        ctx: &mut Context<Self>,
    ) {
        let due = tokio::time::Instant::now() + delay;
        let mut names = Vec::new();
        let mut stops = Vec::new();
        for &i in group.iter().rev() {
            // A temporary member goes for good: forgotten once it is down.
            let purpose = match self.children[i].spec.opts.restart {
                RestartType::Temporary => StopPurpose::Remove,
                _ => StopPurpose::GroupRestart,
            };
            if let Some(stop) = self.begin_stop(i, purpose) {
                stops.push(stop);
            }
        }
        for &i in &group {
            let entry = &mut self.children[i];
            if entry.spec.opts.restart == RestartType::Temporary
                && matches!(entry.state, ChildState::Stopping(..))
            {
                continue; // stopped with the group, never restarted (OTP semantics)
            }
            if !matches!(entry.state, ChildState::Stopping(..)) {
                entry.state = ChildState::Restarting { attempt, due };
            }
            names.push(entry.spec.opts.name.clone());
        }
        if stops.is_empty() && delay.is_zero() {
            self.start_due(&names, ctx);
            return;
        }
        ctx.spawn(
            stop_sequentially(stops)
                .into_actor(self)
                .then(move |_, act, _ctx| {
                    // Siblings that stopped for the group restart wait with the failed one.
                    for name in &names {
                        if let Some(i) = act.index(name) {
                            let e = &mut act.children[i];
                            if matches!(e.state, ChildState::Stopping(..) | ChildState::Stopped) {
                                e.state = ChildState::Restarting { attempt, due };
                            }
                        }
                    }
                    actix::fut::wrap_future::<_, Self>(tokio::time::sleep_until(due))
                        .map(move |_, act, ctx| act.start_due(&names, ctx))
                }),
        );
    }
}

impl Drop for Supervisor {
    /// A supervisor that ends while children still run (it panicked) takes
    /// them down with it, as an OTP supervisor's exit kills its children:
    /// its next incarnation starts them afresh, never beside orphans. After
    /// a normal stop there is nothing left to do here.
    fn drop(&mut self) {
        for entry in &self.children {
            if let ChildState::Running(inc) | ChildState::Stopping(inc, _) = &entry.state {
                inc.abort();
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    /// Starts the children in order. Nothing here can fail: a child whose
    /// factory panics fails like any other child and follows its policy.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let specs: Vec<AnyChildSpec> = self.spec.children.lock().clone();
        for spec in specs {
            self.adopt(spec, ctx);
        }
    }
}

impl Child for Supervisor {
    /// Its own status is the fold of its children's.
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let deadline = tokio::time::Instant::now() + self.kernel.health_timeout;
        let fut = self.collect(deadline);
        HealthReply::Pending(Box::pin(
            fut.into_actor(self)
                .map(|checks, _, _| Health::healthy().with_status(aggregate(&checks))),
        ))
    }

    /// Stops its children in reverse start order, then itself.
    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        let stops = self.stop_all(StopPurpose::Final);
        ctx.spawn(
            stop_sequentially(stops)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// A child's task ended. Sent by the watcher of each incarnation.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ChildExited {
    pub name: String,
    pub generation: u64,
    pub exit: Exit,
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(i) = self.index(&msg.name) else {
            return;
        };
        let supervisor = self.spec.name.clone();
        let entry = &mut self.children[i];
        if entry.generation != msg.generation {
            return; // an older incarnation; its successor is already running
        }
        let state = std::mem::replace(&mut entry.state, ChildState::Stopped);
        let uptime = entry
            .started_at
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        if let Exit::Failed(reason) = &msg.exit {
            entry.last_failure = Some(Failure {
                reason: reason.clone(),
                at: now_rfc3339(),
            });
            self.kernel
                .metrics
                .actor_failures
                .with_label_values(&[&msg.name])
                .inc();
            self.kernel.events.publish(Event::ActorFailed {
                actor: msg.name.clone(),
                supervisor: supervisor.clone(),
                reason: reason.clone(),
            });
        }
        match state {
            ChildState::Stopping(_, StopPurpose::Remove) => {
                self.forget(i);
                return;
            }
            ChildState::Stopping(..) => return, // expected; whoever stopped it decides what comes next
            ChildState::Running(_) => {}
            ChildState::Restarting { .. } | ChildState::Stopped => return,
        }
        let abnormal = msg.exit.is_abnormal();
        match &msg.exit {
            Exit::Failed(reason) => {
                warn!(actor = %msg.name, supervisor = %supervisor, reason = %reason, "actor failed")
            }
            Exit::Normal => info!(actor = %msg.name, supervisor = %supervisor, "actor stopped"),
        }
        if self.kernel.shutdown.is_draining() || self.given_up {
            return;
        }
        let entry = &mut self.children[i];
        if !entry.spec.opts.restart.restarts_after(abnormal) {
            info!(actor = %msg.name, restart = ?entry.spec.opts.restart, "not restarted; removed from its supervisor");
            self.forget(i);
            return;
        }
        if !self.window.admit(self.spec.intensity, Instant::now()) {
            let why = match &msg.exit {
                Exit::Failed(r) => format!("'{}' failed: {r}", msg.name),
                Exit::Normal => format!("'{}' stopped", msg.name),
            };
            let why = format!(
                "{why}; more than {} restarts in {} ms",
                self.spec.intensity.max_restarts,
                millis(self.spec.intensity.window)
            );
            self.escalate(why, ctx);
            return;
        }
        let entry = &mut self.children[i];
        if entry.spec.opts.backoff.resets_after(uptime) {
            entry.consecutive = 0;
        }
        entry.consecutive += 1;
        let attempt = entry.consecutive;
        if attempt > self.spec.intensity.max_consecutive {
            let why = match &msg.exit {
                Exit::Failed(r) => format!("'{}' failed: {r}", msg.name),
                Exit::Normal => format!("'{}' stopped", msg.name),
            };
            let why = format!(
                "{why}; {attempt} failures in a row without a healthy run (more than {})",
                self.spec.intensity.max_consecutive
            );
            self.escalate(why, ctx);
            return;
        }
        let delay = entry
            .spec
            .opts
            .backoff
            .delay(attempt, rand::random::<f64>());
        let group: Vec<usize> = match self.spec.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (i..self.children.len()).collect(),
        };
        self.children[i].state = ChildState::Restarting {
            attempt,
            due: tokio::time::Instant::now() + delay,
        };
        self.restart_group(group, attempt, delay, ctx);
    }
}

impl AnyChildSpec {
    /// The address slot of a nested supervisor; `None` for any other actor.
    fn nested_ref(&self) -> Option<ChildRef<Supervisor>> {
        self.starter.as_supervisor()
    }
}
