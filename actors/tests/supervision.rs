//! Supervision guarantees, proved through the public API: restart strategies,
//! restart types, intensity and escalation (the crash loops that give up are
//! in `escalation.rs`), back-off, failures in lifecycle
//! hooks and factories, crash-surviving state and dynamic children.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use futures::FutureExt;
use holdfast_actors::health::Status;
use holdfast_actors::shutdown::{ControlEvent, ShutdownReason};
use holdfast_actors::supervision::{
    Backoff, Intensity, RestartType, Strategy, SupervisionError, SupervisorSpec,
};
use holdfast_actors::Tree;

/// Generous enough that no scenario here trips it by accident.
const LENIENT: Intensity = Intensity {
    max_restarts: 10,
    window: Duration::from_secs(5),
    max_consecutive: 100,
};

/// Sends `Boom` to the running incarnation of `child` and waits until the
/// next one runs (its probe counted one more start).
async fn crash_and_await_restart(
    child: &holdfast_actors::supervision::ChildRef<Worker>,
    probe: &Probe,
) {
    let before = probe.starts();
    let addr = running(child).await;
    addr.do_send(Boom);
    wait_until(DEADLINE, "the crashed child runs again", || {
        probe.starts() > before && child.addr().is_some_and(|a| a != addr)
    })
    .await;
}

/// One-for-one: a panicking child is restarted alone; its sibling keeps its
/// address and its in-memory state, and health records the failure.
#[actix_rt::test]
async fn one_for_one_restarts_only_the_child_that_panicked() {
    let (kernel, _control) = kernel();
    let (pa, pb) = (Probe::new(), Probe::new());
    let (a, b) = (worker("a", &pa), worker("b", &pb));
    let (ra, rb) = (a.child_ref(), b.child_ref());
    let spec = SupervisorSpec::new("root")
        .strategy(Strategy::OneForOne)
        .intensity(LENIENT)
        .child(a)
        .child(b);
    let tree = Tree::start(&kernel, spec).unwrap();

    let b_addr = running(&rb).await;
    for _ in 0..3 {
        b_addr.send(Bump).await.unwrap();
    }
    crash_and_await_restart(&ra, &pa).await;

    assert_eq!(pa.starts(), 2, "a is restarted once");
    assert_eq!(pa.generation(), 1, "a's new incarnation is generation 1");
    assert_eq!(pb.starts(), 1, "b is not restarted");
    assert!(rb.addr() == Some(b_addr.clone()), "b keeps its address");
    assert_eq!(
        b_addr.send(Count).await.unwrap().own,
        3,
        "b keeps its in-memory state"
    );

    let health = tree.health().await;
    let ca = check(&health, "a");
    assert_eq!(ca.restarts, 1);
    assert_eq!(ca.status, Status::Healthy);
    let failure = ca.last_failure.as_ref().expect("a's failure is recorded");
    assert!(
        failure.reason.contains("boom in a"),
        "reason: {}",
        failure.reason
    );
    let cb = check(&health, "b");
    assert_eq!(cb.restarts, 0);
    assert_eq!(cb.last_failure, None);
    assert_eq!(health.status, Status::Healthy);
}

/// One-for-all: a panic in one child restarts every child of the supervisor.
#[actix_rt::test]
async fn one_for_all_restarts_every_child_when_one_panics() {
    let (kernel, _control) = kernel();
    let probes = [Probe::new(), Probe::new(), Probe::new()];
    let specs: Vec<_> = ["a", "b", "c"]
        .iter()
        .zip(&probes)
        .map(|(n, p)| worker(n, p))
        .collect();
    let refs: Vec<_> = specs.iter().map(|s| s.child_ref()).collect();
    let mut spec = SupervisorSpec::new("root")
        .strategy(Strategy::OneForAll)
        .intensity(LENIENT);
    for s in specs {
        spec = spec.child(s);
    }
    let tree = Tree::start(&kernel, spec).unwrap();
    let before: Vec<_> = futures::future::join_all(refs.iter().map(running)).await;

    before[1].do_send(Boom);
    wait_until(DEADLINE, "all three children run a new incarnation", || {
        probes.iter().all(|p| p.starts() == 2)
            && refs
                .iter()
                .zip(&before)
                .all(|(r, old)| r.addr().is_some_and(|a| a != *old))
    })
    .await;

    for (name, probe) in ["a", "b", "c"].iter().zip(&probes) {
        assert_eq!(probe.generation(), 1, "{name} runs its second generation");
    }
    let health = tree.health().await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            check(&health, name).restarts,
            1,
            "{name} counted one restart"
        );
        assert_eq!(
            check(&health, name).status,
            Status::Healthy,
            "{name} is back up"
        );
    }
    assert!(check(&health, "b").last_failure.is_some());
    assert!(
        check(&health, "a").last_failure.is_none(),
        "a was stopped, it did not fail"
    );
}

/// Rest-for-one: a panic in `b` restarts `b` and the children started after
/// it (`c`), never the ones started before it (`a`).
#[actix_rt::test]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let (kernel, _control) = kernel();
    let (pa, pb, pc) = (Probe::new(), Probe::new(), Probe::new());
    let (a, b, c) = (worker("a", &pa), worker("b", &pb), worker("c", &pc));
    let (ra, rb, rc) = (a.child_ref(), b.child_ref(), c.child_ref());
    let spec = SupervisorSpec::new("root")
        .strategy(Strategy::RestForOne)
        .intensity(LENIENT)
        .child(a)
        .child(b)
        .child(c);
    let tree = Tree::start(&kernel, spec).unwrap();
    let (a_addr, b_addr, c_addr) = (running(&ra).await, running(&rb).await, running(&rc).await);

    b_addr.do_send(Boom);
    wait_until(DEADLINE, "b and c run new incarnations", || {
        pb.starts() == 2
            && pc.starts() == 2
            && rb.addr().is_some_and(|x| x != b_addr)
            && rc.addr().is_some_and(|x| x != c_addr)
    })
    .await;

    assert_eq!(pa.starts(), 1, "a is not restarted");
    assert!(ra.addr() == Some(a_addr), "a keeps its address");
    let health = tree.health().await;
    assert_eq!(check(&health, "a").restarts, 0);
    assert_eq!(check(&health, "b").restarts, 1);
    assert_eq!(check(&health, "c").restarts, 1);
    assert_eq!(health.status, Status::Healthy);
}

/// Restart types: permanent restarts after a normal stop; transient only
/// after a failure; temporary never, and leaves the health checks.
#[actix_rt::test]
async fn restart_types_decide_which_exits_are_restarted() {
    let (kernel, _control) = kernel();
    let probes: Vec<_> = (0..4).map(|_| Probe::new()).collect();
    let permanent = worker("permanent", &probes[0]).restart(RestartType::Permanent);
    let transient_stop = worker("transient-stop", &probes[1]).restart(RestartType::Transient);
    let transient_panic = worker("transient-panic", &probes[2]).restart(RestartType::Transient);
    let temporary = worker("temporary", &probes[3]).restart(RestartType::Temporary);
    let refs = [
        permanent.child_ref(),
        transient_stop.child_ref(),
        transient_panic.child_ref(),
        temporary.child_ref(),
    ];
    let spec = SupervisorSpec::new("root")
        .intensity(LENIENT)
        .child(permanent)
        .child(transient_stop)
        .child(transient_panic)
        .child(temporary);
    let tree = Tree::start(&kernel, spec).unwrap();
    let addrs: Vec<_> = futures::future::join_all(refs.iter().map(running)).await;

    addrs[0].do_send(StopNormally);
    addrs[1].do_send(StopNormally);
    addrs[2].do_send(Boom);
    addrs[3].do_send(Boom);

    wait_until(DEADLINE, "permanent and transient-panic run again", || {
        probes[0].starts() == 2 && probes[2].starts() == 2
    })
    .await;
    let health = health_until(
        &tree,
        "only permanent and transient-panic are left, both healthy",
        |h| {
            find(h, "transient-stop").is_none()
                && find(h, "temporary").is_none()
                && ["permanent", "transient-panic"]
                    .iter()
                    .all(|n| find(h, n).is_some_and(|c| c.status == Status::Healthy))
        },
    )
    .await;

    assert_eq!(
        probes[1].starts(),
        1,
        "transient is not restarted after a normal stop"
    );
    assert_eq!(
        probes[3].starts(),
        1,
        "temporary is not restarted after a panic"
    );
    assert!(refs[1].addr().is_none() && refs[3].addr().is_none());
    let permanent = check(&health, "permanent");
    assert_eq!(permanent.restarts, 1);
    assert_eq!(
        permanent.last_failure, None,
        "a normal stop is not a failure"
    );
    let transient = check(&health, "transient-panic");
    assert_eq!(transient.restarts, 1);
    let failure = transient
        .last_failure
        .as_ref()
        .expect("the panic is recorded");
    assert!(
        failure.reason.contains("boom in transient-panic"),
        "reason: {}",
        failure.reason
    );
}

/// A temporary child stopped because a sibling failed (one-for-all) is not
/// restarted and leaves the tree, so it cannot hold the node unhealthy.
#[actix_rt::test]
async fn a_temporary_child_stopped_by_a_group_restart_leaves_the_tree() {
    let (kernel, _control) = kernel();
    let (pw, pt) = (Probe::new(), Probe::new());
    let w = worker("w", &pw);
    let child = w.child_ref();
    let temporary = worker("temporary", &pt).restart(RestartType::Temporary);
    let spec = SupervisorSpec::new("root")
        .strategy(Strategy::OneForAll)
        .intensity(LENIENT)
        .child(w)
        .child(temporary);
    let tree = Tree::start(&kernel, spec).unwrap();

    crash_and_await_restart(&child, &pw).await;

    let health = health_until(&tree, "the temporary child leaves the tree", |h| {
        find(h, "temporary").is_none()
    })
    .await;
    assert_eq!(pt.starts(), 1, "temporary is not restarted with the group");
    assert_eq!(health.status, Status::Healthy, "{:#?}", health.checks);
    assert!(health.ready);
    let again = Probe::new();
    tree.add_child(tree.root(), worker("temporary", &again))
        .await
        .expect("its name is free again");
}

/// A temporary child that exited stays gone when its supervisor is itself
/// restarted: the new supervisor incarnation does not start it again.
#[actix_rt::test]
async fn a_temporary_child_that_exited_is_not_started_again_by_a_restarted_supervisor() {
    let (kernel, _control) = kernel();
    let (pw, pt) = (Probe::new(), Probe::new());
    let w = worker("w", &pw);
    let child = w.child_ref();
    let temporary = worker("temporary", &pt).restart(RestartType::Temporary);
    let temporary_ref = temporary.child_ref();
    let sub = SupervisorSpec::new("sub")
        .intensity(Intensity {
            max_restarts: 0,
            window: Duration::from_secs(5),
            max_consecutive: 10,
        })
        .child(temporary)
        .child(w)
        .into_child()
        .backoff(Backoff::none());
    let tree = Tree::start(
        &kernel,
        SupervisorSpec::new("root").intensity(LENIENT).child(sub),
    )
    .unwrap();
    running(&temporary_ref).await.do_send(StopNormally);
    health_until(&tree, "the temporary child leaves the tree", |h| {
        find(h, "temporary").is_none()
    })
    .await;

    crash_and_await_restart(&child, &pw).await; // sub gives up at once; root restarts it

    let health = health_until(&tree, "sub runs again", |h| {
        find(h, "sub").is_some_and(|c| c.restarts == 1 && c.status == Status::Healthy)
    })
    .await;
    assert_eq!(pt.starts(), 1, "the temporary child is not started again");
    assert!(find(&health, "temporary").is_none(), "{:#?}", health.checks);
}

/// Past its intensity the root gives up: it asks for a shutdown with an
/// escalation reason, and the failing child stays down.
#[actix_rt::test]
async fn root_past_its_intensity_escalates_to_a_shutdown_and_stops_restarting() {
    let (kernel, mut control) = kernel();
    let probe = Probe::new();
    let crashy = worker("crashy", &probe);
    let child = crashy.child_ref();
    let spec = SupervisorSpec::new("root")
        .intensity(Intensity {
            max_restarts: 2,
            window: Duration::from_secs(5),
            max_consecutive: 10,
        })
        .child(crashy);
    let tree = Tree::start(&kernel, spec).unwrap();

    crash_and_await_restart(&child, &probe).await;
    crash_and_await_restart(&child, &probe).await;
    assert!(
        !kernel.shutdown.is_draining(),
        "two restarts are within the intensity"
    );
    running(&child).await.do_send(Boom);

    let event = tokio::time::timeout(DEADLINE, control.recv())
        .await
        .expect("a control event arrives");
    let Some(ControlEvent::Shutdown(ShutdownReason::Escalation { supervisor, reason })) = event
    else {
        panic!("expected an escalation, got {event:?}");
    };
    assert_eq!(supervisor, "root");
    assert!(
        reason.contains("crashy") && reason.contains("more than 2 restarts"),
        "reason: {reason}"
    );
    assert!(kernel.shutdown.is_draining());

    // The restart decision is taken in the same step as the escalation, so
    // by now a restart would already have been started.
    assert_eq!(probe.starts(), 3, "not restarted after the escalation");
    let health = tree.health().await;
    let c = check(&health, "crashy");
    assert_eq!(c.status, Status::Unhealthy);
    assert_eq!(detail_reason(c), "stopped");
    assert_eq!(c.restarts, 2);
    assert!(child.addr().is_none());
}

/// A nested supervisor past its intensity is restarted by its parent, which
/// stays up: no shutdown is requested and the subtree runs again.
#[actix_rt::test]
async fn nested_supervisor_past_its_intensity_is_restarted_by_its_parent() {
    let (kernel, mut control) = kernel();
    let probe = Probe::new();
    let w = worker("w", &probe);
    let child = w.child_ref();
    let sub = SupervisorSpec::new("sub")
        .intensity(Intensity {
            max_restarts: 1,
            window: Duration::from_secs(5),
            max_consecutive: 10,
        })
        .child(w)
        .into_child()
        .backoff(Backoff::none());
    let spec = SupervisorSpec::new("root").intensity(LENIENT).child(sub);
    let tree = Tree::start(&kernel, spec).unwrap();

    crash_and_await_restart(&child, &probe).await; // within sub's intensity
    let health = tree.health().await;
    assert_eq!(check(&health, "sub").restarts, 0);
    assert_eq!(check(&health, "w").restarts, 1);

    crash_and_await_restart(&child, &probe).await; // sub gives up; root restarts it
    let health = health_until(&tree, "sub is restarted and healthy", |h| {
        find(h, "sub").is_some_and(|c| c.restarts >= 1 && c.status == Status::Healthy)
    })
    .await;
    let sub = check(&health, "sub");
    assert_eq!(sub.restarts, 1, "the parent restarted sub once");
    let failure = sub
        .last_failure
        .as_ref()
        .expect("sub's escalation is its failure");
    assert!(
        failure.reason.contains("gave up"),
        "reason: {}",
        failure.reason
    );
    assert_eq!(
        check(&health, "w").restarts,
        0,
        "w belongs to the new sub incarnation"
    );
    assert_eq!(health.status, Status::Healthy);
    assert!(health.ready);
    assert_eq!(probe.starts(), 3);
    assert!(!kernel.shutdown.is_draining(), "the root stays up");
    assert_eq!(
        control.recv().now_or_never(),
        None,
        "no shutdown is requested"
    );
}

/// Back-off: the first restart is immediate, the next ones wait `min`, then
/// twice `min` (measured on tokio's paused clock, free of scheduling noise).
#[actix_rt::test]
async fn backoff_delays_consecutive_restarts_exponentially() {
    tokio::time::pause();
    let (kernel, _control) = kernel();
    let probe = Probe::new();
    probe
        .started_panics
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
        jitter: 0.0,
        reset_after: Duration::from_secs(3600),
    };
    let spec = SupervisorSpec::new("root")
        .intensity(LENIENT)
        .child(worker("flaky", &probe).backoff(backoff));
    let tree = Tree::start(&kernel, spec).unwrap();

    wait_until(DEADLINE, "the fourth incarnation starts", || {
        probe.starts() == 4
    })
    .await;

    let at = probe.started_at.lock().clone();
    assert_eq!(at.len(), 4);
    // Each incarnation failed the instant it started, so its start is its
    // failure; a timer fires on the millisecond tick at or after its deadline.
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] < Duration::from_millis(1),
        "first restart is immediate: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(100) && gaps[1] < Duration::from_millis(150),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(200) && gaps[2] < Duration::from_millis(250),
        "{gaps:?}"
    );
    let health = tree.health().await;
    assert_eq!(check(&health, "flaky").restarts, 3);
}

/// A panic in `started()` and a panic in the factory are failures like any
/// other: recorded with their message and restarted by policy.
#[actix_rt::test]
async fn panics_in_started_and_in_the_factory_are_failures_that_follow_policy() {
    let (kernel, _control) = kernel();
    let (in_started, in_factory) = (Probe::new(), Probe::new());
    in_started
        .started_panics
        .store(1, std::sync::atomic::Ordering::SeqCst);
    in_factory
        .factory_panics
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let spec = SupervisorSpec::new("root")
        .intensity(LENIENT)
        .child(worker("in-started", &in_started).restart(RestartType::Transient))
        .child(worker("in-factory", &in_factory).restart(RestartType::Transient));
    let tree = Tree::start(&kernel, spec).unwrap();

    let health = health_until(&tree, "both children run after one failure each", |h| {
        ["in-started", "in-factory"]
            .iter()
            .all(|n| find(h, n).is_some_and(|c| c.restarts == 1 && c.status == Status::Healthy))
    })
    .await;
    let started = check(&health, "in-started").last_failure.as_ref().unwrap();
    assert!(
        started.reason.contains("boom in in-started started"),
        "reason: {}",
        started.reason
    );
    let factory = check(&health, "in-factory").last_failure.as_ref().unwrap();
    assert!(
        factory
            .reason
            .contains("factory panicked: boom in in-factory factory"),
        "reason: {}",
        factory.reason
    );
    assert_eq!(in_started.starts(), 2);
    assert_eq!(
        in_factory.starts(),
        1,
        "the factory built one actor: the failed call built none"
    );
}

/// An actor that answers pings; not supervised, on the same arbiter.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

/// Asks for a pong carrying `n`.
#[derive(Message)]
#[rtype(result = "u64")]
struct Ping {
    /// Echoed back.
    n: u64,
}

impl Handler<Ping> for Echo {
    type Result = u64;

    fn handle(&mut self, msg: Ping, _ctx: &mut Context<Self>) -> u64 {
        msg.n
    }
}

/// A handler panic ends only that actor's task: unrelated actors on the same
/// arbiter, supervised or not, keep answering.
#[actix_rt::test]
async fn a_handler_panic_does_not_stop_other_actors_on_the_same_arbiter() {
    let (kernel, _control) = kernel();
    let echo = Echo.start();
    let (pc, pn) = (Probe::new(), Probe::new());
    let (crashy, neighbour) = (worker("crashy", &pc), worker("neighbour", &pn));
    let (rc, rn) = (crashy.child_ref(), neighbour.child_ref());
    let spec = SupervisorSpec::new("root")
        .intensity(LENIENT)
        .child(crashy)
        .child(neighbour);
    let _tree = Tree::start(&kernel, spec).unwrap();
    let neighbour = running(&rn).await;
    neighbour.send(Bump).await.unwrap();

    crash_and_await_restart(&rc, &pc).await;

    assert_eq!(
        echo.send(Ping { n: 7 }).await.unwrap(),
        7,
        "the unsupervised actor answers"
    );
    assert_eq!(
        neighbour.send(Count).await.unwrap().own,
        1,
        "the supervised neighbour answers"
    );
    assert_eq!(pn.starts(), 1);
}

/// State captured by the factory outlives the incarnation that crashed; the
/// incarnation's own fields do not.
#[actix_rt::test]
async fn state_held_by_the_factory_survives_a_panic_restart() {
    let (kernel, _control) = kernel();
    let probe = Probe::new();
    let spec = worker("counter", &probe);
    let child = spec.child_ref();
    let _tree = Tree::start(
        &kernel,
        SupervisorSpec::new("root").intensity(LENIENT).child(spec),
    )
    .unwrap();
    let addr = running(&child).await;
    for _ in 0..5 {
        addr.send(Bump).await.unwrap();
    }
    assert_eq!(addr.send(Count).await.unwrap(), Counts { own: 5, kept: 5 });

    crash_and_await_restart(&child, &probe).await;

    let counts = running(&child).await.send(Count).await.unwrap();
    assert_eq!(counts, Counts { own: 0, kept: 5 });
}

/// Children added at run time start and show in health; a taken name is
/// refused; a removed child stops, leaves health and frees its name.
#[actix_rt::test]
async fn dynamic_children_can_be_added_refused_and_removed() {
    let (kernel, _control) = kernel();
    let tree = Tree::start(
        &kernel,
        SupervisorSpec::new("root").child(worker("a", &Probe::new())),
    )
    .unwrap();
    let probe = Probe::new();
    let extra = worker("extra", &probe);
    let child = extra.child_ref();

    tree.add_child(tree.root(), extra).await.unwrap();
    let addr = running(&child).await;
    assert_eq!(probe.starts(), 1);
    let health = tree.health().await;
    assert_eq!(check(&health, "extra").status, Status::Healthy);

    let dup = tree
        .add_child(tree.root(), worker("extra", &Probe::new()))
        .await;
    assert_eq!(dup, Err(SupervisionError::DuplicateName("extra".into())));
    let dup = tree
        .add_child(tree.root(), worker("a", &Probe::new()))
        .await;
    assert_eq!(dup, Err(SupervisionError::DuplicateName("a".into())));
    assert!(
        child.addr() == Some(addr),
        "the refused duplicate does not disturb the original"
    );

    let outcome = tree.remove_child(tree.root(), "extra").await.unwrap();
    assert_eq!(outcome, holdfast_actors::shutdown::Outcome::Stopped);
    assert!(child.addr().is_none(), "the removed child is not running");
    let health = tree.health().await;
    assert!(
        find(&health, "extra").is_none(),
        "removed from health: {:#?}",
        health.checks
    );
    assert!(find(&health, "a").is_some());
    assert_eq!(probe.starts(), 1, "a removed child is not restarted");
    assert_eq!(
        tree.remove_child(tree.root(), "extra").await,
        Err(SupervisionError::NoSuchChild("extra".into()))
    );

    let again = Probe::new();
    tree.add_child(tree.root(), worker("extra", &again))
        .await
        .unwrap();
    wait_until(DEADLINE, "the re-added child starts", || {
        again.starts() == 1
    })
    .await;
}

/// Removing a nested supervisor frees the names of its whole subtree, so the
/// same subtree can be added again.
#[actix_rt::test]
async fn removing_a_nested_supervisor_frees_every_name_in_its_subtree() {
    let (kernel, _control) = kernel();
    let tree = Tree::start(&kernel, SupervisorSpec::new("root")).unwrap();
    let subtree = |probe: &Arc<Probe>| {
        SupervisorSpec::new("sub")
            .child(worker("leaf", probe))
            .into_child()
    };
    let first = Probe::new();
    tree.add_child(tree.root(), subtree(&first)).await.unwrap();
    wait_until(DEADLINE, "the first leaf runs", || first.starts() == 1).await;
    assert_eq!(
        tree.add_child(tree.root(), worker("leaf", &Probe::new()))
            .await,
        Err(SupervisionError::DuplicateName("leaf".into())),
        "a nested child's name is taken in the whole tree"
    );

    tree.remove_child(tree.root(), "sub").await.unwrap();
    let second = Probe::new();
    tree.add_child(tree.root(), subtree(&second))
        .await
        .expect("every name of the removed subtree is free");

    wait_until(DEADLINE, "the second leaf runs", || second.starts() == 1).await;
    let health = tree.health().await;
    assert_eq!(check(&health, "leaf").supervisor, "sub");
    assert_eq!(first.starts(), 1);
}

/// Counts live incarnations: up in the factory, down in `Drop`.
struct Counted {
    live: Arc<std::sync::atomic::AtomicI64>,
}

impl Actor for Counted {
    type Context = Context<Self>;
}

impl holdfast_actors::supervision::Child for Counted {}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A nested supervisor that panics takes its children down with it: after
/// its restart exactly one incarnation of each child is alive, and the
/// child's handle points at the new one.
#[actix_rt::test]
async fn a_crashed_supervisor_leaves_no_orphans() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let (kernel, _control) = kernel();
    let live = Arc::new(AtomicI64::new(0));
    let l = live.clone();
    let child = holdfast_actors::supervision::ChildSpec::new("w", move |_| {
        l.fetch_add(1, Ordering::SeqCst);
        Counted { live: l.clone() }
    })
    .backoff(Backoff::none());
    let w = child.child_ref();
    let sub = SupervisorSpec::new("sub")
        .child(child)
        .into_child()
        .backoff(Backoff::none());
    let tree = Tree::start(&kernel, SupervisorSpec::new("root").child(sub)).unwrap();
    tree.health().await;
    assert_eq!(live.load(Ordering::SeqCst), 1);
    let before = w.addr().unwrap();
    tree.crash("sub", "test").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let checks = tree.health().await.checks;
        let sub = checks.iter().find(|c| c.name == "sub").unwrap();
        if sub.restarts == 1
            && checks
                .iter()
                .any(|c| c.name == "w" && c.status == holdfast_actors::health::Status::Healthy)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sub not restarted: {checks:?}"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        live.load(Ordering::SeqCst),
        1,
        "exactly one live incarnation, no orphan"
    );
    let after = w.addr().expect("the handle points at the new incarnation");
    assert!(!before.connected(), "the old incarnation is gone");
    assert!(after.connected());
}
