//! Scheduler guarantees: periodic tasks repeat and never overlap themselves,
//! every run is bounded by its timeout, a failing run is counted and the
//! scheduler carries on, and shutdown cancels the runs in flight.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use holdfast_actors::events::Event;
use holdfast_actors::health::Status;
use holdfast_actors::kernel::Kernel;
use holdfast_actors::scheduler::{RunOutcome, Scheduler, TaskInfo, TaskSpec};
use holdfast_actors::shutdown::{Outcome, ShutdownReason};
use holdfast_actors::supervision::SupervisorSpec;
use holdfast_actors::Tree;

/// Interval of the periodic tasks here: short, so that runs pile up fast.
const EVERY: Duration = Duration::from_millis(10);

/// Sets its flag when dropped: proves a run's future was cancelled.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A tree running the scheduler (and the event bus, to see `TaskFailed`).
async fn start(kernel: &Kernel) -> (Tree, Scheduler) {
    let scheduler = Scheduler::new();
    let spec = SupervisorSpec::new("root")
        .child(scheduler.spec())
        .child(kernel.events.spec());
    let tree = Tree::start(kernel, spec).unwrap();
    wait_until(DEADLINE, "the scheduler runs", || {
        scheduler.addr().is_some()
    })
    .await;
    (tree, scheduler)
}

/// The task `name` as the scheduler lists it.
fn task(scheduler: &Scheduler, name: &str) -> TaskInfo {
    let tasks = scheduler.list();
    tasks
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no task '{name}' in {tasks:#?}"))
}

/// A counter bumped by each run.
fn counting(name: &str, runs: &Arc<AtomicU64>) -> TaskSpec {
    let runs = runs.clone();
    TaskSpec::every(name, EVERY, move || {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

/// A periodic task runs again and again, and the list shows its last run.
#[actix_rt::test]
async fn a_periodic_task_runs_repeatedly() {
    let (kernel, _control) = kernel();
    let (_tree, scheduler) = start(&kernel).await;
    let runs = Arc::new(AtomicU64::new(0));

    scheduler.schedule(counting("tick", &runs)).await.unwrap();

    wait_until(DEADLINE, "the task ran three times", || {
        runs.load(Ordering::SeqCst) >= 3
    })
    .await;
    let info = task(&scheduler, "tick");
    assert!(info.runs >= 2, "{info:?}");
    assert_eq!(info.failures, 0);
    assert_eq!(info.last_outcome, Some(RunOutcome::Ok));
    assert!(info.last_run.is_some());
    assert_eq!(info.schedule, "every 10 ms");
}

/// A task that panics is counted as a `Panic` failure and published as
/// `TaskFailed`; the scheduler is not restarted and keeps running others.
#[actix_rt::test]
async fn a_panicking_task_is_counted_and_other_tasks_keep_running() {
    let (kernel, _control) = kernel();
    let (tree, scheduler) = start(&kernel).await;
    let addr = scheduler.addr();
    let good = Arc::new(AtomicU64::new(0));
    let bad = TaskSpec::every("bad", EVERY, || async { panic!("task exploded") });

    scheduler.schedule(bad).await.unwrap();
    scheduler.schedule(counting("good", &good)).await.unwrap();

    wait_until(DEADLINE, "the bad task failed twice", || {
        task(&scheduler, "bad").failures >= 2
    })
    .await;
    let good_then = good.load(Ordering::SeqCst);
    wait_until(DEADLINE, "the good task runs on", || {
        good.load(Ordering::SeqCst) >= good_then + 3
    })
    .await;

    let bad = task(&scheduler, "bad");
    assert_eq!(bad.last_outcome, Some(RunOutcome::Panic));
    assert!(
        bad.last_error
            .as_deref()
            .is_some_and(|e| e.contains("task exploded")),
        "{bad:?}"
    );
    assert_eq!(bad.failures, bad.runs, "every run of it failed");
    assert_eq!(task(&scheduler, "good").failures, 0);
    assert!(
        scheduler.addr() == addr,
        "the scheduler itself did not crash"
    );
    let health = tree.health().await;
    assert_eq!(check(&health, "scheduler").restarts, 0);
    assert_eq!(check(&health, "scheduler").status, Status::Healthy);
    let failed = kernel.events.recent(1000).into_iter().any(|e| {
        matches!(&e.event, Event::TaskFailed { task, outcome, .. } if task == "bad" && outcome == "panic")
    });
    assert!(failed, "TaskFailed was published");
}

/// A run longer than its timeout is cancelled and recorded as `Timeout`.
#[actix_rt::test]
async fn a_run_longer_than_its_timeout_is_recorded_as_a_timeout() {
    let (kernel, _control) = kernel();
    let (_tree, scheduler) = start(&kernel).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let spec = TaskSpec::once("slow", Duration::ZERO, move || {
        let guard = SetOnDrop(flag.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        }
    })
    .timeout(Duration::from_millis(50));

    scheduler.schedule(spec).await.unwrap();

    wait_until(DEADLINE, "the run is over", || {
        task(&scheduler, "slow").runs == 1
    })
    .await;
    let info = task(&scheduler, "slow");
    assert_eq!(info.last_outcome, Some(RunOutcome::Timeout));
    assert_eq!(info.last_error.as_deref(), Some("no result within 50 ms"));
    assert_eq!(info.failures, 1);
    assert!(!info.running);
    wait_until(DEADLINE, "the overrunning run is cancelled", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

/// A periodic task slower than its interval never runs twice at once: the
/// ticks that find it still running are skipped and counted.
#[actix_rt::test]
async fn a_slow_periodic_task_never_overlaps_itself() {
    let (kernel, _control) = kernel();
    let (_tree, scheduler) = start(&kernel).await;
    let in_flight = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let (now, max) = (in_flight.clone(), most.clone());
    let spec = TaskSpec::every("slow", EVERY, move || {
        let (now, max) = (now.clone(), max.clone());
        async move {
            max.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(EVERY * 4).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });

    scheduler.schedule(spec).await.unwrap();

    wait_until(
        DEADLINE,
        "three runs finished and ticks were skipped",
        || {
            let info = task(&scheduler, "slow");
            info.runs >= 3 && info.skipped >= 2
        },
    )
    .await;
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two runs at once");
    assert_eq!(task(&scheduler, "slow").failures, 0);
}

/// Shutdown cancels the run in flight: a run that would set a flag after
/// 10 s never sets it, and the shutdown is quick.
#[actix_rt::test]
async fn shutdown_cancels_the_run_in_flight() {
    let (kernel, _control) = kernel();
    let (tree, scheduler) = start(&kernel).await;
    let (started, finished, dropped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (s, f, d) = (started.clone(), finished.clone(), dropped.clone());
    let spec = TaskSpec::once("long", Duration::ZERO, move || {
        let (s, f, guard) = (s.clone(), f.clone(), SetOnDrop(d.clone()));
        async move {
            let _guard = guard;
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(10)).await;
            f.store(true, Ordering::SeqCst);
            Ok(())
        }
    });
    scheduler.schedule(spec).await.unwrap();
    wait_until(DEADLINE, "the long run is in flight", || {
        started.load(Ordering::SeqCst)
    })
    .await;
    assert!(task(&scheduler, "long").running);

    let report = tree
        .shutdown(ShutdownReason::Requested { by: "test".into() })
        .await;

    assert_eq!(
        report.actor("scheduler").map(|a| a.outcome),
        Some(Outcome::Stopped),
        "{report:#?}"
    );
    assert!(report.total_ms < 1000, "{report:#?}");
    // A dropped future can never reach the line that sets `finished`.
    wait_until(DEADLINE, "the run's future is dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    assert!(!finished.load(Ordering::SeqCst));
}

/// The list shows every task with its schedule, last run and last outcome,
/// including a one-shot task's error.
#[actix_rt::test]
async fn tasks_are_listed_with_their_last_run_and_outcome() {
    let (kernel, _control) = kernel();
    let (_tree, scheduler) = start(&kernel).await;
    let runs = Arc::new(AtomicU64::new(0));
    scheduler.schedule(counting("tick", &runs)).await.unwrap();
    scheduler
        .schedule(TaskSpec::once("once", Duration::from_millis(5), || async {
            Err("nope".to_owned())
        }))
        .await
        .unwrap();
    scheduler
        .schedule(TaskSpec::once(
            "later",
            Duration::from_secs(3600),
            || async { Ok(()) },
        ))
        .await
        .unwrap();

    wait_until(DEADLINE, "tick and once have run", || {
        task(&scheduler, "once").runs == 1 && task(&scheduler, "tick").runs >= 1
    })
    .await;

    let names: Vec<String> = scheduler.list().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["later", "once", "tick"]);
    let once = task(&scheduler, "once");
    assert_eq!(once.schedule, "once after 5 ms");
    assert!(once.last_run.is_some());
    assert_eq!(once.last_outcome, Some(RunOutcome::Error));
    assert_eq!(once.last_error.as_deref(), Some("nope"));
    let tick = task(&scheduler, "tick");
    assert!(tick.last_run.is_some());
    assert_eq!(tick.last_outcome, Some(RunOutcome::Ok));
    let later = task(&scheduler, "later");
    assert_eq!(
        (later.runs, later.last_run, later.last_outcome),
        (0, None, None)
    );
    assert_eq!(
        scheduler
            .schedule(TaskSpec::once("once", Duration::ZERO, || async { Ok(()) }))
            .await,
        Err(holdfast_actors::scheduler::SchedulerError::Duplicate(
            "once".into()
        ))
    );
}
