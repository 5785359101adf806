//! Health guarantees: an actor that does not answer by the deadline is
//! unhealthy, and the tree folds its checks into one status and readiness by
//! the PROTOCOL.md rules.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::*;
use holdfast_actors::health::{Health, HealthReply, Status};
use holdfast_actors::supervision::{Child, ChildSpec, SupervisorSpec};
use holdfast_actors::{KernelSettings, Tree};

/// Short, so that the no-answer scenarios stay fast.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a blocked actor holds its thread at most, should the test that
/// blocked it fail before releasing it.
const MAX_BLOCK: Duration = Duration::from_secs(10);

fn settings() -> KernelSettings {
    KernelSettings {
        health_timeout: HEALTH_TIMEOUT,
        ..KernelSettings::default()
    }
}

/// An actor that reports whatever status the test sets, or never answers.
struct Reporter {
    /// `None`: the health future never resolves.
    says: Option<Health>,
}

impl Actor for Reporter {
    type Context = Context<Self>;
}

impl Child for Reporter {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        match &self.says {
            Some(h) => h.clone().into(),
            None => HealthReply::Pending(Box::pin(actix::fut::wrap_future(
                futures::future::pending(),
            ))),
        }
    }
}

fn reporter(name: &str, says: Option<Health>) -> ChildSpec<Reporter> {
    ChildSpec::new(name, move |_| Reporter { says: says.clone() })
}

/// An actor that can be told to block its thread until released.
struct Blocker {
    /// Set by the test to let a blocked handler return.
    released: Arc<AtomicBool>,
    /// Set by the actor once it is blocking.
    blocking: Arc<AtomicBool>,
}

impl Actor for Blocker {
    type Context = Context<Self>;
}

impl Child for Blocker {}

/// Blocks the actor's thread (and with it its arbiter) until released.
#[derive(Message)]
#[rtype(result = "()")]
struct Block;

impl Handler<Block> for Blocker {
    type Result = ();

    fn handle(&mut self, _: Block, _ctx: &mut Context<Self>) {
        self.blocking.store(true, Ordering::SeqCst);
        let give_up = Instant::now() + MAX_BLOCK;
        // The fault being injected: a handler that holds its thread.
        while !self.released.load(Ordering::SeqCst) && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.blocking.store(false, Ordering::SeqCst);
    }
}

/// A non-critical actor whose health never resolves is reported unhealthy
/// with "no answer within …", which degrades the node but keeps it ready.
#[actix_rt::test]
async fn an_actor_that_never_answers_is_unhealthy_and_a_non_critical_one_only_degrades() {
    let (kernel, _control) = kernel_with(settings());
    let spec = SupervisorSpec::new("root")
        .child(reporter("fine", Some(Health::healthy())))
        .child(reporter("silent", None).critical(false));
    let tree = Tree::start(&kernel, spec).unwrap();

    let asked = tokio::time::Instant::now();
    let health = tree.health().await;
    let waited = asked.elapsed();

    let silent = check(&health, "silent");
    assert_eq!(silent.status, Status::Unhealthy);
    assert!(
        detail_reason(silent).starts_with("no answer within"),
        "reason: {}",
        detail_reason(silent)
    );
    assert_eq!(check(&health, "fine").status, Status::Healthy);
    assert_eq!(health.status, Status::Degraded);
    assert!(
        health.ready,
        "a non-critical actor does not take the node out of service"
    );
    assert!(
        waited >= HEALTH_TIMEOUT - Duration::from_millis(5),
        "the sweep waited for the deadline: {waited:?}"
    );
    assert!(
        waited < HEALTH_TIMEOUT * 3,
        "the sweep is bounded by the deadline: {waited:?}"
    );
}

/// A critical actor blocking its thread does not answer: it is unhealthy,
/// the node is unhealthy and not ready; once unblocked it is healthy again.
#[actix_rt::test]
async fn a_critical_actor_blocking_its_thread_makes_the_node_unhealthy_and_not_ready() {
    let (kernel, _control) = kernel_with(settings());
    let released = Arc::new(AtomicBool::new(false));
    let blocking = Arc::new(AtomicBool::new(false));
    // Its own thread: blocking the test's thread would block the supervisor too.
    let arbiter = Arbiter::new();
    let blocker = {
        let (released, blocking) = (released.clone(), blocking.clone());
        ChildSpec::new("blocker", move |_| Blocker {
            released: released.clone(),
            blocking: blocking.clone(),
        })
        .arbiter(arbiter.handle())
    };
    let child = blocker.child_ref();
    let spec = SupervisorSpec::new("root")
        .child(reporter("fine", Some(Health::healthy())))
        .child(blocker);
    let tree = Tree::start(&kernel, spec).unwrap();
    let healthy = tree.health().await;
    assert_eq!(healthy.status, Status::Healthy, "{:#?}", healthy.checks);

    running(&child).await.do_send(Block);
    wait_until(DEADLINE, "the blocker holds its thread", || {
        blocking.load(Ordering::SeqCst)
    })
    .await;
    let health = tree.health().await;
    released.store(true, Ordering::SeqCst);

    let blocked = check(&health, "blocker");
    assert_eq!(blocked.status, Status::Unhealthy);
    assert!(
        detail_reason(blocked).starts_with("no answer within"),
        "reason: {}",
        detail_reason(blocked)
    );
    assert_eq!(health.status, Status::Unhealthy);
    assert!(!health.ready);

    let health = health_until(&tree, "the unblocked actor answers again", |h| {
        h.status == Status::Healthy
    })
    .await;
    assert!(health.ready);
    assert_eq!(
        check(&health, "blocker").restarts,
        0,
        "a slow actor is not restarted"
    );
    arbiter.stop();
}

/// A critical actor that says it is unhealthy makes the node unhealthy and
/// not ready, and its own reason shows in its check.
#[actix_rt::test]
async fn a_critical_unhealthy_actor_makes_the_node_unhealthy_and_not_ready() {
    let (kernel, _control) = kernel_with(settings());
    let spec = SupervisorSpec::new("root")
        .child(reporter("fine", Some(Health::healthy())))
        .child(reporter(
            "db",
            Some(Health::unhealthy("connection refused")),
        ));
    let tree = Tree::start(&kernel, spec).unwrap();

    let health = tree.health().await;

    assert_eq!(detail_reason(check(&health, "db")), "connection refused");
    assert_eq!(health.status, Status::Unhealthy);
    assert!(!health.ready);
}

/// A critical actor that says it is degraded degrades the node, which stays
/// ready; a non-critical degraded one changes nothing.
#[actix_rt::test]
async fn a_degraded_critical_actor_degrades_the_node_which_stays_ready() {
    let (kernel, _control) = kernel_with(settings());
    let spec = SupervisorSpec::new("root")
        .child(reporter("cache", Some(Health::degraded("evicting"))).critical(false))
        .child(reporter("fine", Some(Health::healthy())));
    let tree = Tree::start(&kernel, spec).unwrap();
    let health = tree.health().await;
    assert_eq!(
        health.status,
        Status::Healthy,
        "non-critical degraded: {:#?}",
        health.checks
    );

    tree.add_child(
        tree.root(),
        reporter("store", Some(Health::degraded("replica lag"))),
    )
    .await
    .unwrap();
    let health = tree.health().await;

    assert_eq!(check(&health, "store").status, Status::Degraded);
    assert_eq!(detail_reason(check(&health, "store")), "replica lag");
    assert_eq!(health.status, Status::Degraded);
    assert!(health.ready);
}
