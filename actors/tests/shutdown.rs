//! Staged shutdown guarantees: the actors of a stage stop in parallel, an
//! actor that overruns its timeout is abandoned and reported, and stages run
//! in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use holdfast_actors::shutdown::{Outcome, ShutdownReason, Stage};
use holdfast_actors::supervision::{Child, ChildSpec, SupervisorSpec};
use holdfast_actors::Tree;
use parking_lot::Mutex;

/// An actor that takes `takes` to stop (`None`: it never stops on its own)
/// and writes its name in `log` once stopped.
struct Slow {
    name: String,
    takes: Option<Duration>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Actor for Slow {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().push(self.name.clone());
    }
}

impl Child for Slow {
    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        if let Some(takes) = self.takes {
            ctx.run_later(takes, |_, ctx| ctx.stop());
        }
    }
}

fn slow(
    name: &str,
    takes: Option<Duration>,
    stage: Stage,
    log: &Arc<Mutex<Vec<String>>>,
) -> ChildSpec<Slow> {
    let log = log.clone();
    let owned = name.to_owned();
    ChildSpec::new(name, move |_| Slow {
        name: owned.clone(),
        takes,
        log: log.clone(),
    })
    .stage(stage)
}

fn requested() -> ShutdownReason {
    ShutdownReason::Requested { by: "test".into() }
}

/// Three actors of one stage, each taking 1 s to stop, stop in parallel:
/// the whole shutdown takes about 1 s, not 3 s.
#[actix_rt::test]
async fn actors_of_one_stage_stop_in_parallel() {
    let (kernel, _control) = kernel();
    let log = Arc::default();
    let second = Some(Duration::from_secs(1));
    let spec = SupervisorSpec::new("root")
        .child(slow("s1", second, Stage::Services, &log))
        .child(slow("s2", second, Stage::Services, &log))
        .child(slow("s3", second, Stage::Services, &log));
    let tree = Tree::start(&kernel, spec).unwrap();
    health_until(&tree, "all three run", |h| {
        h.status == holdfast_actors::health::Status::Healthy
    })
    .await;

    let report = tree.shutdown(requested()).await;

    assert!(report.total_ms < 2500, "stopped in parallel: {report:#?}");
    for name in ["s1", "s2", "s3"] {
        let line = report
            .actor(name)
            .unwrap_or_else(|| panic!("{name} is in the report"));
        assert_eq!(line.outcome, Outcome::Stopped, "{line:?}");
        assert_eq!(line.stage, Stage::Services);
        assert!(line.ms >= 1000, "{name} really took its second: {line:?}");
    }
    assert!(report.clean());
    assert_eq!(report.exit_code, 0);
    assert_eq!(log.lock().len(), 3, "all three stopped");
}

/// An actor that never finishes stopping is abandoned at its timeout and
/// reported `TimedOut`; the rest of the shutdown still completes.
#[actix_rt::test]
async fn an_actor_that_never_stops_is_reported_timed_out_and_the_shutdown_completes() {
    let (kernel, _control) = kernel();
    let log = Arc::default();
    let stuck =
        slow("stuck", None, Stage::Services, &log).shutdown_timeout(Duration::from_millis(300));
    let stuck_ref = stuck.child_ref();
    let spec = SupervisorSpec::new("root")
        .child(stuck)
        .child(slow("polite", Some(Duration::ZERO), Stage::Services, &log))
        .child(slow("store", Some(Duration::ZERO), Stage::Storage, &log));
    let tree = Tree::start(&kernel, spec).unwrap();
    running(&stuck_ref).await;

    let report = tree.shutdown(requested()).await;

    assert_eq!(
        report.actor("stuck").map(|a| a.outcome),
        Some(Outcome::TimedOut),
        "{report:#?}"
    );
    assert!(report.actor("stuck").unwrap().ms >= 300);
    assert_eq!(
        report.actor("polite").map(|a| a.outcome),
        Some(Outcome::Stopped)
    );
    assert_eq!(
        report.actor("store").map(|a| a.outcome),
        Some(Outcome::Stopped),
        "later stages still run"
    );
    assert!(!report.clean());
    assert!(
        report.total_ms < 1500,
        "bounded by the timeout, not the stuck actor: {report:#?}"
    );
    wait_until(DEADLINE, "the abandoned actor's task is cancelled", || {
        stuck_ref.addr().is_none()
    })
    .await;
}

/// Stages run in order: connections, then core, then storage, whatever the
/// start order and however long each actor takes; nested supervisors stop
/// their children in the stage of each child.
#[actix_rt::test]
async fn stages_stop_in_order_connections_core_storage() {
    let (kernel, _control) = kernel();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    // Earlier stages take longer: were stages run together, storage would stop first.
    let sub = SupervisorSpec::new("sub")
        .child(slow(
            "core",
            Some(Duration::from_millis(60)),
            Stage::Core,
            &log,
        ))
        .into_child();
    let spec = SupervisorSpec::new("root")
        .child(slow("storage", Some(Duration::ZERO), Stage::Storage, &log))
        .child(sub)
        .child(slow(
            "connections",
            Some(Duration::from_millis(120)),
            Stage::Connections,
            &log,
        ));
    let tree = Tree::start(&kernel, spec).unwrap();
    health_until(&tree, "all run", |h| {
        h.checks.len() == 4 && h.status == holdfast_actors::health::Status::Healthy
    })
    .await;

    let report = tree.shutdown(requested()).await;

    assert_eq!(*log.lock(), ["connections", "core", "storage"]);
    let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, Stage::ORDER);
    let actors: Vec<(&str, Stage)> = report
        .actors
        .iter()
        .map(|a| (a.actor.as_str(), a.stage))
        .collect();
    assert_eq!(
        actors,
        [
            ("connections", Stage::Connections),
            ("core", Stage::Core),
            ("storage", Stage::Storage)
        ]
    );
    assert_eq!(report.actor("core").unwrap().supervisor, "sub");
    assert!(report.clean(), "{report:#?}");
}

/// A shutdown flips draining at once, and the tree then refuses new children.
#[actix_rt::test]
async fn a_shutdown_drains_at_once_and_refuses_new_children() {
    let (kernel, _control) = kernel();
    let log = Arc::default();
    let tree = Tree::start(
        &kernel,
        SupervisorSpec::new("root").child(slow("a", Some(Duration::ZERO), Stage::Services, &log)),
    )
    .unwrap();
    assert!(!kernel.shutdown.is_draining());

    let report = tree.shutdown(requested()).await;

    assert!(kernel.shutdown.is_draining());
    assert_eq!(report.reason, requested());
    assert_eq!(report.actor("a").map(|a| a.outcome), Some(Outcome::Stopped));
    let refused = tree
        .add_child(
            tree.root(),
            slow("late", Some(Duration::ZERO), Stage::Services, &log),
        )
        .await;
    assert!(
        refused.is_err(),
        "no child joins a tree that shut down: {refused:?}"
    );
}
