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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::fut::ActorFutureExt;
use actix::prelude::*;
use futures::future::join_all;
use futures::FutureExt;
use parking_lot::Mutex;
use serde::Serialize;
use tracing::{error, info, warn};

use super::child::{
    AnyChildSpec, Child, ChildCtx, ChildRef, ChildSpec, Control, Exit, Incarnation, StartArgs,
};
use super::policy::{Intensity, RestartType, RestartWindow, Strategy};
use super::SupervisionError;
use crate::events::Event;
use crate::health::{aggregate, now_rfc3339, Check, Failure, Health, HealthReply, Status};
use crate::kernel::Kernel;
use crate::shutdown::{millis, ActorReport, Outcome, ShutdownReason, Stage};

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

    /// The checks of every child, and of every descendant of nested ones.
    fn collect(&self, deadline: tokio::time::Instant) -> impl Future<Output = Vec<Check>> {
        let supervisor = self.spec.name.clone();
        let futures = self.children.iter().map(|entry| {
            let base = Check {
                name: entry.spec.opts.name.clone(),
                status: Status::Unhealthy,
                critical: entry.spec.opts.critical,
                supervisor: supervisor.clone(),
                restarts: entry.restarts,
                last_failure: entry.last_failure.clone(),
                uptime_s: 0.0,
                latency_ms: 0.0,
                details: Default::default(),
            };
            let uptime = entry
                .started_at
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            let nested = entry.spec.nested_ref();
            let extra = entry.spec.nested.as_ref().and_then(|n| n.details.clone());
            match &entry.state {
                ChildState::Running(inc) => {
                    let control = inc.control.clone();
                    async move {
                        let asked = Instant::now();
                        let mut base = Check {
                            uptime_s: uptime,
                            ..base
                        };
                        if let Some(addr) = nested.and_then(|r| r.addr()) {
                            let answer = tokio::time::timeout_at(
                                deadline + NESTED_HEALTH_MARGIN,
                                addr.send(CollectHealth { deadline }),
                            )
                            .await;
                            base.latency_ms = asked.elapsed().as_secs_f64() * 1e3;
                            return match answer {
                                Ok(Ok(children)) => {
                                    base.status = aggregate(&children);
                                    base.details
                                        .insert("children".into(), children.len().into());
                                    if let Some(extra) = extra {
                                        base.details.extend(extra());
                                    }
                                    let mut all = vec![base];
                                    all.extend(children);
                                    all
                                }
                                _ => vec![no_answer(base, deadline, asked)],
                            };
                        }
                        let (tx, rx) = futures::channel::oneshot::channel();
                        let sent = control
                            .unbounded_send(Control::Health { reply: tx })
                            .is_ok();
                        let answer = tokio::time::timeout_at(deadline, rx).await;
                        base.latency_ms = asked.elapsed().as_secs_f64() * 1e3;
                        match answer {
                            Ok(Ok(Health { status, details })) if sent => {
                                vec![Check {
                                    status,
                                    details,
                                    ..base
                                }]
                            }
                            _ => vec![no_answer(base, deadline, asked)],
                        }
                    }
                    .boxed_local()
                }
                ChildState::Restarting { attempt, due } => {
                    let mut check = base;
                    check.details.insert("reason".into(), "restarting".into());
                    check.details.insert("attempt".into(), (*attempt).into());
                    let in_ms = millis(due.saturating_duration_since(tokio::time::Instant::now()));
                    check.details.insert("restart_in_ms".into(), in_ms.into());
                    FutureExt::boxed_local(futures::future::ready(vec![check]))
                }
                ChildState::Stopping(..) | ChildState::Stopped => {
                    let mut check = base;
                    check.details.insert("reason".into(), "stopped".into());
                    FutureExt::boxed_local(futures::future::ready(vec![check]))
                }
            }
        });
        join_all(futures).map(|v| v.into_iter().flatten().collect())
    }
}

/// The check of a child that did not answer by the deadline.
fn no_answer(mut check: Check, deadline: tokio::time::Instant, asked: Instant) -> Check {
    let waited = deadline.into_std().saturating_duration_since(asked);
    check.status = Status::Unhealthy;
    check.details.insert(
        "reason".into(),
        format!("no answer within {} ms", millis(waited)).into(),
    );
    check
}

/// One stop the supervisor awaits.
struct PendingStop {
    name: String,
    stage: Stage,
    timeout: Duration,
    incarnation: Incarnation,
}

impl PendingStop {
    /// Asks the child to stop and waits for its exit, at most its timeout; an
    /// overrun is aborted and reported, never waited on.
    async fn run(self) -> (String, Stage, Outcome, Duration) {
        let asked = Instant::now();
        let mut exit = self.incarnation.exit.clone();
        let _ = self.incarnation.control.unbounded_send(Control::Shutdown);
        let outcome = match tokio::time::timeout(self.timeout, exit.wait_for(|e| e.is_some())).await
        {
            Ok(Ok(e)) => match e.as_ref() {
                Some(Exit::Normal) => Outcome::Stopped,
                _ => Outcome::Failed,
            },
            Ok(Err(_)) => Outcome::Failed,
            Err(_) => {
                self.incarnation.abort();
                Outcome::TimedOut
            }
        };
        (self.name, self.stage, outcome, asked.elapsed())
    }
}

/// Runs stops one after another (reverse start order is the caller's).
async fn stop_sequentially(stops: Vec<PendingStop>) {
    for stop in stops {
        let (name, _, outcome, took) = stop.run().await;
        if outcome != Outcome::Stopped {
            warn!(actor = %name, ?outcome, ms = millis(took), "child did not stop cleanly");
        }
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
        if uptime >= entry.spec.opts.backoff.reset_after {
            entry.consecutive = 0;
        }
        entry.consecutive += 1;
        let attempt = entry.consecutive;
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

/// Collects the checks of every actor below this supervisor, flattened.
#[derive(Message)]
#[rtype(result = "Vec<Check>")]
pub struct CollectHealth {
    /// Children that have not answered by then are unhealthy.
    pub deadline: tokio::time::Instant,
}

impl Handler<CollectHealth> for Supervisor {
    type Result = ResponseFuture<Vec<Check>>;

    fn handle(&mut self, msg: CollectHealth, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.collect(msg.deadline))
    }
}

/// Adds a child to a running supervisor and starts it.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisionError>")]
pub struct AddChild {
    /// The new child.
    pub spec: AnyChildSpec,
}

impl Handler<AddChild> for Supervisor {
    type Result = Result<(), SupervisionError>;

    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.kernel.shutdown.is_draining() {
            return Err(SupervisionError::ShuttingDown);
        }
        let names = msg
            .spec
            .nested
            .as_ref()
            .map(|n| n.names())
            .unwrap_or_else(|| vec![msg.spec.opts.name.clone()]);
        self.kernel.claim_names(&names)?;
        self.spec.children.lock().push(msg.spec.clone());
        self.children.push(Entry {
            spec: msg.spec,
            generation: 0,
            state: ChildState::Stopped,
            restarts: 0,
            consecutive: 0,
            last_failure: None,
            started_at: None,
        });
        let i = self.children.len() - 1;
        self.start_child(i, ctx);
        Ok(())
    }
}

/// Stops a child (bounded by its shutdown timeout) and removes it for good.
#[derive(Message)]
#[rtype(result = "Result<Outcome, SupervisionError>")]
pub struct RemoveChild {
    /// The child's name.
    pub name: String,
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseFuture<Result<Outcome, SupervisionError>>;

    fn handle(&mut self, msg: RemoveChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(i) = self.index(&msg.name) else {
            return Box::pin(futures::future::ready(Err(SupervisionError::NoSuchChild(
                msg.name,
            ))));
        };
        self.spec
            .children
            .lock()
            .retain(|c| c.opts.name != msg.name);
        match self.begin_stop(i, StopPurpose::Remove) {
            Some(stop) => Box::pin(async move { Ok(stop.run().await.2) }),
            None => {
                self.forget(i);
                Box::pin(futures::future::ready(Ok(Outcome::Stopped)))
            }
        }
    }
}

/// The (name, stage, shutdown timeout) of every actor below this supervisor
/// that is not itself a supervisor: the shutdown plan.
#[derive(Message)]
#[rtype(result = "Vec<(String, Stage, Duration)>")]
pub struct ShutdownPlan;

impl Handler<ShutdownPlan> for Supervisor {
    type Result = ResponseFuture<Vec<(String, Stage, Duration)>>;

    fn handle(&mut self, _: ShutdownPlan, _ctx: &mut Context<Self>) -> Self::Result {
        let mut plan = Vec::new();
        let mut nested = Vec::new();
        for e in &self.children {
            match e.spec.nested_ref().and_then(|r| r.addr()) {
                Some(addr) => nested.push(addr.send(ShutdownPlan)),
                None => plan.push((
                    e.spec.opts.name.clone(),
                    e.spec.opts.stage,
                    e.spec.opts.shutdown_timeout,
                )),
            }
        }
        Box::pin(async move {
            for sub in join_all(nested).await.into_iter().flatten() {
                plan.extend(sub);
            }
            plan
        })
    }
}

/// Stops, in parallel, every actor below this supervisor whose stage is
/// `stage`, each bounded by its own timeout; nested supervisors do the same
/// for their children. Answers one report line per actor.
#[derive(Message)]
#[rtype(result = "Vec<ActorReport>")]
pub struct StopStage {
    /// The stage being stopped.
    pub stage: Stage,
    /// The stage's longest timeout: how long a nested supervisor may take.
    pub bound: Duration,
}

impl Handler<StopStage> for Supervisor {
    type Result = ResponseFuture<Vec<ActorReport>>;

    fn handle(&mut self, msg: StopStage, _ctx: &mut Context<Self>) -> Self::Result {
        let supervisor = self.spec.name.clone();
        let mut stops = Vec::new();
        let mut nested = Vec::new();
        let mut down = Vec::new();
        for i in 0..self.children.len() {
            let entry = &self.children[i];
            if let Some(addr) = entry.spec.nested_ref().and_then(|r| r.addr()) {
                let bound = msg.bound + NESTED_HEALTH_MARGIN;
                let name = entry.spec.opts.name.clone();
                nested.push(async move {
                    match tokio::time::timeout(bound, addr.send(StopStage { stage: msg.stage, bound: msg.bound })).await {
                        Ok(Ok(reports)) => reports,
                        _ => {
                            warn!(supervisor = %name, stage = %msg.stage, "nested supervisor did not report its stage");
                            Vec::new()
                        }
                    }
                });
                continue;
            }
            if entry.spec.opts.stage != msg.stage {
                continue;
            }
            match self.begin_stop(i, StopPurpose::Final) {
                Some(stop) => stops.push(stop),
                None => {
                    // Down or restarting: cancel the restart, report it as failed.
                    self.children[i].state = ChildState::Stopped;
                    down.push(ActorReport {
                        actor: self.children[i].spec.opts.name.clone(),
                        supervisor: supervisor.clone(),
                        stage: msg.stage,
                        outcome: Outcome::Failed,
                        ms: 0,
                    });
                }
            }
        }
        Box::pin(async move {
            let own = join_all(stops.into_iter().map(PendingStop::run));
            let (own, nested) = futures::join!(own, join_all(nested));
            let mut reports = down;
            reports.extend(
                own.into_iter()
                    .map(|(actor, stage, outcome, took)| ActorReport {
                        actor,
                        supervisor: supervisor.clone(),
                        stage,
                        outcome,
                        ms: millis(took),
                    }),
            );
            reports.extend(nested.into_iter().flatten());
            reports
        })
    }
}

/// Stops whatever is still running below this supervisor, then the
/// supervisor itself. The last step of a shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Terminate;

impl Handler<Terminate> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Terminate, _ctx: &mut Context<Self>) -> Self::Result {
        self.given_up = true;
        let stops = self.stop_all(StopPurpose::Final);
        Box::pin(
            stop_sequentially(stops)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// Restarts one child at an operator's request: a graceful stop bounded by
/// its shutdown timeout, then a start through its supervisor. The restart
/// counts in the child's `restarts` and publishes `ActorRestarted`, but not
/// in the supervisor's restart intensity, since it is no failure; and only
/// this child restarts, whatever the strategy. A child waiting out a restart
/// back-off is started at once. A supervisor with no child of that name asks
/// its nested supervisors, so the whole tree is searched.
#[derive(Message)]
#[rtype(result = "Result<Restarted, SupervisionError>")]
pub struct RestartChild {
    /// The child's name.
    pub name: String,
}

/// The answer to [`RestartChild`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Restarted {
    /// The child.
    pub actor: String,
    /// Its supervisor.
    pub supervisor: String,
    /// How the stop of the old incarnation ended; `None` when none was running.
    pub stop: Option<Outcome>,
    /// Milliseconds the stop took.
    pub stop_ms: u64,
    /// The child's restart count, this restart included.
    pub restarts: u64,
}

impl Handler<RestartChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Restarted, SupervisionError>>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(i) = self.index(&msg.name) else {
            let nested = self.ask_nested(msg.name, |name| RestartChild { name });
            return Box::pin(nested.into_actor(self));
        };
        let name = msg.name;
        if self.kernel.shutdown.is_draining() || self.given_up {
            return Box::pin(actix::fut::ready(Err(SupervisionError::ShuttingDown)));
        }
        let supervisor = self.spec.name.clone();
        let entry = &self.children[i];
        let generation = entry.generation;
        match entry.state {
            ChildState::Restarting { .. } => {
                info!(actor = %name, supervisor = %supervisor, "restart requested; starting the actor now");
                self.start_child(i, ctx);
                let restarts = self.children[i].restarts;
                return Box::pin(actix::fut::ready(Ok(Restarted {
                    actor: name,
                    supervisor,
                    stop: None,
                    stop_ms: 0,
                    restarts,
                })));
            }
            ChildState::Running(_) => {}
            ChildState::Stopping(..) | ChildState::Stopped => {
                return Box::pin(actix::fut::ready(Err(SupervisionError::NotApplicable {
                    name,
                    reason: "it is stopping or stopped".into(),
                })));
            }
        }
        info!(actor = %name, supervisor = %supervisor, "restart requested; stopping the actor");
        let Some(stop) = self.begin_stop(i, StopPurpose::Restart) else {
            unreachable!("begin_stop answers a stop for a running child");
        };
        Box::pin(
            stop.run()
                .into_actor(self)
                .map(move |(name, _, outcome, took), act, ctx| {
                    let Some(i) = act.index(&name) else {
                        return Err(SupervisionError::NoSuchChild(name)); // removed meanwhile
                    };
                    if act.kernel.shutdown.is_draining() || act.given_up {
                        return Err(SupervisionError::ShuttingDown);
                    }
                    let entry = &mut act.children[i];
                    // The exit may or may not have been handled yet; either way the
                    // stop must still be ours (not taken over by a group restart,
                    // a removal or a stage stop).
                    let ours = entry.generation == generation
                        && matches!(
                            entry.state,
                            ChildState::Stopping(_, StopPurpose::Restart) | ChildState::Stopped
                        );
                    if !ours {
                        return Err(SupervisionError::NotApplicable {
                            name,
                            reason: "its supervisor took it over while it stopped".into(),
                        });
                    }
                    entry.state = ChildState::Restarting {
                        attempt: 0,
                        due: tokio::time::Instant::now(),
                    };
                    act.start_child(i, ctx);
                    Ok(Restarted {
                        actor: name,
                        supervisor,
                        stop: Some(outcome),
                        stop_ms: millis(took),
                        restarts: act.children[i].restarts,
                    })
                }),
        )
    }
}

/// Makes one child panic inside its own context (the admin API's chaos
/// route), so that its supervisor handles a real panic with its real policy.
/// Supervisors cannot be crashed: their running children would be orphaned.
/// A supervisor with no child of that name asks its nested supervisors.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisionError>")]
pub struct CrashChild {
    /// The child's name.
    pub name: String,
    /// The panic message.
    pub reason: String,
}

impl Handler<CrashChild> for Supervisor {
    type Result = ResponseFuture<Result<(), SupervisionError>>;

    fn handle(&mut self, msg: CrashChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(i) = self.index(&msg.name) else {
            let reason = msg.reason;
            return Box::pin(self.ask_nested(msg.name, move |name| CrashChild {
                name,
                reason: reason.clone(),
            }));
        };
        let entry = &self.children[i];
        let refused = |reason: &str| {
            Box::pin(futures::future::ready(Err(
                SupervisionError::NotApplicable {
                    name: msg.name.clone(),
                    reason: reason.to_owned(),
                },
            )))
        };
        let ChildState::Running(inc) = &entry.state else {
            return refused("it is not running");
        };
        if inc
            .control
            .unbounded_send(Control::Crash { reason: msg.reason })
            .is_err()
        {
            return refused("it is not running");
        }
        warn!(actor = %msg.name, supervisor = %self.spec.name, "crash requested (chaos)");
        Box::pin(futures::future::ready(Ok(())))
    }
}

impl Supervisor {
    /// Asks every nested supervisor with `make(name)` and answers the one
    /// that has the child. `NoSuchChild` when none has it, or
    /// `SupervisorDown` when none has it and one of them did not answer.
    fn ask_nested<M, R>(
        &self,
        name: String,
        make: impl Fn(String) -> M,
    ) -> impl Future<Output = Result<R, SupervisionError>> + 'static
    where
        M: Message<Result = Result<R, SupervisionError>> + Send + 'static,
        R: Send + 'static,
        Supervisor: Handler<M>,
    {
        let asks: Vec<_> = self
            .children
            .iter()
            .filter_map(|e| {
                let addr = e.spec.nested_ref().and_then(|r| r.addr());
                Some((e.spec.opts.name.clone(), addr?.send(make(name.clone()))))
            })
            .collect();
        async move {
            let mut down = None;
            for (nested, ask) in asks {
                match ask.await {
                    Ok(Err(SupervisionError::NoSuchChild(_))) => {}
                    Ok(answer) => return answer,
                    Err(_) => down = Some(nested),
                }
            }
            Err(down.map_or(
                SupervisionError::NoSuchChild(name),
                SupervisionError::SupervisorDown,
            ))
        }
    }
}

impl AnyChildSpec {
    /// The address slot of a nested supervisor; `None` for any other actor.
    fn nested_ref(&self) -> Option<ChildRef<Supervisor>> {
        self.starter.as_supervisor()
    }
}
