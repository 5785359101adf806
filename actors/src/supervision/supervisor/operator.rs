//! Operator requests from the admin API: [`RestartChild`] (a graceful stop
//! and a start, counted as a restart but not against the intensity, answered
//! with [`Restarted`]) and [`CrashChild`] (a real panic inside the actor, for
//! chaos drills). A supervisor with no child of that name asks its nested
//! supervisors through `ask_nested`, so the whole tree is searched.

use std::future::Future;

use actix::fut::ActorFutureExt;
use actix::prelude::*;
use serde::Serialize;
use tracing::{info, warn};

use super::super::child::Control;
use super::super::SupervisionError;
use super::{ChildState, StopPurpose, Supervisor};
use crate::shutdown::{millis, Outcome};

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
