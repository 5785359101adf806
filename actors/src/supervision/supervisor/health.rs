//! Health collection: how a supervisor gathers the checks of every actor
//! below it, asking each running child under a deadline and each nested
//! supervisor for its own subtree, and marks a child that does not answer in
//! time as unhealthy. Answers [`CollectHealth`] and backs the supervisor's own
//! health check.

use std::future::Future;
use std::time::Instant;

use actix::prelude::*;
use futures::future::join_all;
use futures::FutureExt;

use super::super::child::Control;
use super::{ChildState, Supervisor, NESTED_HEALTH_MARGIN};
use crate::health::{aggregate, Check, Health, Status};
use crate::shutdown::millis;

impl Supervisor {
    /// The checks of every child, and of every descendant of nested ones.
    pub(super) fn collect(
        &self,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Vec<Check>> {
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
