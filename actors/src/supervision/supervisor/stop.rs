//! The staged shutdown as a supervisor takes part in it: [`ShutdownPlan`]
//! lists every actor below it with its stage and timeout, [`StopStage`] stops
//! one stage in parallel (nested supervisors included) and reports each
//! actor's outcome, and [`Terminate`] stops whatever is left, then the
//! supervisor. `PendingStop` is one bounded stop the supervisor awaits.

use std::time::{Duration, Instant};

use actix::fut::ActorFutureExt;
use actix::prelude::*;
use futures::future::join_all;
use tracing::warn;

use super::super::child::{Control, Exit, Incarnation};
use super::{ChildState, StopPurpose, Supervisor, NESTED_HEALTH_MARGIN};
use crate::shutdown::{millis, ActorReport, Outcome, Stage};

/// One stop the supervisor awaits.
pub(super) struct PendingStop {
    pub(super) name: String,
    pub(super) stage: Stage,
    pub(super) timeout: Duration,
    pub(super) incarnation: Incarnation,
}

impl PendingStop {
    /// Asks the child to stop and waits for its exit, at most its timeout; an
    /// overrun is aborted and reported, never waited on.
    pub(super) async fn run(self) -> (String, Stage, Outcome, Duration) {
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
pub(super) async fn stop_sequentially(stops: Vec<PendingStop>) {
    for stop in stops {
        let (name, _, outcome, took) = stop.run().await;
        if outcome != Outcome::Stopped {
            warn!(actor = %name, ?outcome, ms = millis(took), "child did not stop cleanly");
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
