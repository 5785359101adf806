//! The `scheduler` actor: named one-shot and periodic tasks.
//!
//! Owns: the timers of every task, and the runs in flight.
//! Answers: [`ScheduleTask`], [`CancelTask`], [`ListTasks`] (through
//! [`Scheduler`]).
//! Guarantees: a periodic task never overlaps itself (a tick that finds the
//! previous run still going is skipped and counted); every run is bounded by
//! the task's timeout; a run that panics or fails is counted, logged and
//! published as `TaskFailed`, and the scheduler carries on; at shutdown every
//! run in flight is cancelled.
//! Restart policy: permanent, critical, stage `core`.
//! Lost on a crash: the runs in flight (they are cancelled). The task table
//! with its statistics lives outside the actor, so the next incarnation
//! re-arms every task; a one-shot task that already ran does not run again.
//!
//! Task futures run on the scheduler's arbiter. A task that blocks its thread
//! blocks the scheduler too: put blocking work in `actix_web::web::block` or
//! `tokio::task::spawn_blocking` inside the task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use parking_lot::Mutex;
use serde::Serialize;
use tracing::{debug, warn};

use crate::clock::now_rfc3339;
use crate::events::Event;
use crate::health::{Health, HealthReply};
use crate::kernel::Kernel;
use crate::shutdown::{millis, Stage};
use crate::supervision::{panic_message, Child, ChildRef, ChildSpec};

/// The body of a task: builds one run's future. Errors are strings shown in
/// the task list.
pub type TaskFn = Arc<dyn Fn() -> LocalBoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Default bound on one run.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// When a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Once, `after` this long.
    Once {
        /// Delay before the run.
        after: Duration,
    },
    /// Every `interval` plus a random `0..=jitter`, first after one interval.
    Every {
        /// Time between the ends of scheduling ticks.
        interval: Duration,
        /// Random spread added to each interval so that tasks on many nodes do not align.
        jitter: Duration,
    },
}

/// A task to schedule.
#[derive(Clone)]
pub struct TaskSpec {
    /// Unique name.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Bound on one run; an overrunning run is cancelled and counted as a timeout.
    pub timeout: Duration,
    /// The body.
    pub run: TaskFn,
}

impl TaskSpec {
    /// A periodic task with no jitter and the default timeout.
    pub fn every<F, Fut>(name: impl Into<String>, interval: Duration, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + 'static,
    {
        Self {
            name: name.into(),
            schedule: Schedule::Every {
                interval,
                jitter: Duration::ZERO,
            },
            timeout: DEFAULT_TASK_TIMEOUT,
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// A one-shot task with the default timeout.
    pub fn once<F, Fut>(name: impl Into<String>, after: Duration, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + 'static,
    {
        Self {
            name: name.into(),
            schedule: Schedule::Once { after },
            timeout: DEFAULT_TASK_TIMEOUT,
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// Sets the jitter of a periodic task.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        if let Schedule::Every { interval, .. } = self.schedule {
            self.schedule = Schedule::Every { interval, jitter };
        }
        self
    }

    /// Sets the bound on one run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// It returned `Ok`.
    Ok,
    /// It returned `Err`.
    Error,
    /// It panicked.
    Panic,
    /// It overran its timeout and was cancelled.
    Timeout,
    /// It was cancelled by the task's removal or by shutdown.
    Cancelled,
}

impl RunOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Error => "error",
            RunOutcome::Panic => "panic",
            RunOutcome::Timeout => "timeout",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// A task as `ListTasks` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskInfo {
    /// The task's name.
    pub name: String,
    /// `every 5000 ms` or `once after 100 ms`.
    pub schedule: String,
    /// Whether a run is in flight.
    pub running: bool,
    /// Finished runs.
    pub runs: u64,
    /// Runs that did not end `ok`.
    pub failures: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped: u64,
    /// When the last run started, RFC 3339.
    pub last_run: Option<String>,
    /// How the last run ended.
    pub last_outcome: Option<RunOutcome>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// The last error, panic message or timeout.
    pub last_error: Option<String>,
}

/// A task and its statistics, kept across scheduler restarts.
struct TaskEntry {
    spec: TaskSpec,
    info: TaskInfo,
    /// A one-shot task that has run; not re-armed after a restart.
    done: bool,
}

/// The task table shared by every scheduler incarnation.
type TaskTable = Arc<Mutex<BTreeMap<String, TaskEntry>>>;

/// The scheduler actor. See the module docs.
pub struct SchedulerActor {
    /// Every task; outlives this incarnation.
    tasks: TaskTable,
    kernel: Kernel,
    /// Timers armed by this incarnation, to cancel on removal.
    timers: BTreeMap<String, SpawnHandle>,
    /// Runs in flight; aborted when the task is removed, at shutdown, and
    /// when this incarnation dies (see `Drop`).
    running: BTreeMap<String, tokio::task::AbortHandle>,
}

impl SchedulerActor {
    fn arm(&mut self, name: &str, ctx: &mut Context<Self>) {
        let delay = {
            let tasks = self.tasks.lock();
            let Some(entry) = tasks.get(name) else { return };
            match entry.spec.schedule {
                Schedule::Once { .. } if entry.done => return,
                Schedule::Once { after } => after,
                Schedule::Every { interval, jitter } => {
                    interval + jitter.mul_f64(rand::random::<f64>())
                }
            }
        };
        let owned = name.to_owned();
        let handle = ctx.run_later(delay, move |act, ctx| {
            act.timers.remove(&owned);
            act.fire(&owned, ctx);
            act.arm(&owned, ctx);
        });
        self.timers.insert(name.to_owned(), handle);
    }

    fn fire(&mut self, name: &str, ctx: &mut Context<Self>) {
        let (run, timeout) = {
            let mut tasks = self.tasks.lock();
            let Some(entry) = tasks.get_mut(name) else {
                return;
            };
            if self.running.contains_key(name) {
                entry.info.skipped += 1;
                self.kernel
                    .metrics
                    .task_runs
                    .with_label_values(&[name, "skipped"])
                    .inc();
                debug!(task = %name, "previous run still going; tick skipped");
                return;
            }
            if matches!(entry.spec.schedule, Schedule::Once { .. }) {
                entry.done = true;
            }
            entry.info.running = true;
            entry.info.last_run = Some(now_rfc3339());
            (entry.spec.run.clone(), entry.spec.timeout)
        };
        let started = Instant::now();
        let task = actix_rt::spawn(run());
        self.running.insert(name.to_owned(), task.abort_handle());
        let name = name.to_owned();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(tokio::time::timeout(timeout, task)).map(
                move |result, act, _| {
                    let (outcome, error) = match result {
                        Ok(Ok(Ok(()))) => (RunOutcome::Ok, None),
                        Ok(Ok(Err(e))) => (RunOutcome::Error, Some(e)),
                        Ok(Err(e)) if e.is_panic() => {
                            (RunOutcome::Panic, Some(panic_message(&*e.into_panic())))
                        }
                        Ok(Err(_)) => (RunOutcome::Cancelled, None),
                        Err(_) => (
                            RunOutcome::Timeout,
                            Some(format!("no result within {} ms", millis(timeout))),
                        ),
                    };
                    act.finish(&name, outcome, error, started.elapsed());
                },
            ),
        );
    }

    fn finish(&mut self, name: &str, outcome: RunOutcome, error: Option<String>, took: Duration) {
        if let Some(handle) = self.running.remove(name) {
            handle.abort(); // a timed-out run is still going: cancel it
        }
        let metrics = &self.kernel.metrics;
        metrics
            .task_runs
            .with_label_values(&[name, outcome.as_str()])
            .inc();
        metrics
            .task_duration
            .with_label_values(&[name])
            .observe(took.as_secs_f64());
        let mut tasks = self.tasks.lock();
        let Some(entry) = tasks.get_mut(name) else {
            return;
        };
        let info = &mut entry.info;
        info.running = false;
        info.runs += 1;
        info.last_outcome = Some(outcome);
        info.last_duration_ms = Some(millis(took));
        if outcome != RunOutcome::Ok {
            info.failures += 1;
            info.last_error = error.clone();
            let error = error.unwrap_or_default();
            warn!(task = %name, outcome = outcome.as_str(), error = %error, "scheduled task run failed");
            self.kernel.events.publish(Event::TaskFailed {
                task: name.to_owned(),
                outcome: outcome.as_str().to_owned(),
                error,
            });
        }
    }

    fn cancel_all(&mut self) {
        for (_, handle) in std::mem::take(&mut self.running) {
            handle.abort();
        }
    }
}

impl Drop for SchedulerActor {
    /// Runs on a normal stop and while unwinding from a panic alike, so no run
    /// outlives the incarnation that started it.
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    /// Arms every task in the table. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.tasks.lock().keys().cloned().collect();
        for name in names {
            if let Some(entry) = self.tasks.lock().get_mut(&name) {
                entry.info.running = false; // a run of the previous incarnation was cancelled
            }
            self.arm(&name, ctx);
        }
    }
}

impl Child for SchedulerActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let tasks = self.tasks.lock();
        let failures: u64 = tasks.values().map(|t| t.info.failures).sum();
        Health::healthy()
            .with("tasks", tasks.len())
            .with("running", self.running.len())
            .with("failures", failures)
            .into()
    }

    /// Cancels every run in flight, then stops.
    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        self.cancel_all();
        ctx.stop();
    }
}

/// Adds a task; fails if one of that name exists.
#[derive(Message)]
#[rtype(result = "Result<(), SchedulerError>")]
pub struct ScheduleTask {
    /// The task.
    pub spec: TaskSpec,
}

/// What the scheduler refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// A task of that name exists.
    #[error("a task named '{0}' is already scheduled")]
    Duplicate(String),
    /// The scheduler is restarting or stopped.
    #[error("the scheduler is not running")]
    Unavailable,
}

impl Handler<ScheduleTask> for SchedulerActor {
    type Result = Result<(), SchedulerError>;

    fn handle(&mut self, msg: ScheduleTask, ctx: &mut Context<Self>) -> Self::Result {
        let name = msg.spec.name.clone();
        {
            let mut tasks = self.tasks.lock();
            if tasks.contains_key(&name) {
                return Err(SchedulerError::Duplicate(name));
            }
            tasks.insert(name.clone(), new_entry(msg.spec));
        }
        self.arm(&name, ctx);
        Ok(())
    }
}

fn new_entry(spec: TaskSpec) -> TaskEntry {
    let schedule = match spec.schedule {
        Schedule::Once { after } => format!("once after {} ms", millis(after)),
        Schedule::Every { interval, jitter } if jitter.is_zero() => {
            format!("every {} ms", millis(interval))
        }
        Schedule::Every { interval, jitter } => {
            format!(
                "every {} ms + up to {} ms jitter",
                millis(interval),
                millis(jitter)
            )
        }
    };
    let info = TaskInfo {
        name: spec.name.clone(),
        schedule,
        running: false,
        runs: 0,
        failures: 0,
        skipped: 0,
        last_run: None,
        last_outcome: None,
        last_duration_ms: None,
        last_error: None,
    };
    TaskEntry {
        spec,
        info,
        done: false,
    }
}

/// Removes a task and cancels its run in flight; answers whether it existed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CancelTask {
    /// The task's name.
    pub name: String,
}

impl Handler<CancelTask> for SchedulerActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> bool {
        if let Some(timer) = self.timers.remove(&msg.name) {
            ctx.cancel_future(timer);
        }
        if let Some(run) = self.running.remove(&msg.name) {
            run.abort();
        }
        self.tasks.lock().remove(&msg.name).is_some()
    }
}

/// Lists every task with its last run and outcome.
#[derive(Message)]
#[rtype(result = "Vec<TaskInfo>")]
pub struct ListTasks;

impl Handler<ListTasks> for SchedulerActor {
    type Result = MessageResult<ListTasks>;

    fn handle(&mut self, _: ListTasks, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.tasks.lock().values().map(|t| t.info.clone()).collect())
    }
}

/// The handle to the scheduler: builds its child spec and talks to whichever
/// incarnation runs.
#[derive(Clone, Default)]
pub struct Scheduler {
    tasks: TaskTable,
    actor: ChildRef<SchedulerActor>,
}

impl Scheduler {
    /// A handle with an empty task table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task before the scheduler starts; it is armed when the
    /// scheduler starts. Use [`Scheduler::schedule`] once it runs.
    ///
    /// # Errors
    /// A task of that name exists.
    pub fn with_task(&self, spec: TaskSpec) -> Result<(), SchedulerError> {
        let mut tasks = self.tasks.lock();
        if tasks.contains_key(&spec.name) {
            return Err(SchedulerError::Duplicate(spec.name));
        }
        tasks.insert(spec.name.clone(), new_entry(spec));
        Ok(())
    }

    /// The scheduler's child spec: permanent, critical, stage `core`.
    pub fn spec(&self) -> ChildSpec<SchedulerActor> {
        let tasks = self.tasks.clone();
        ChildSpec::new("scheduler", move |cctx| SchedulerActor {
            tasks: tasks.clone(),
            kernel: cctx.kernel.clone(),
            timers: BTreeMap::new(),
            running: BTreeMap::new(),
        })
        .stage(Stage::Core)
        .bind(&self.actor)
    }

    /// Schedules a task.
    ///
    /// # Errors
    /// A duplicate name, or the scheduler is down.
    pub async fn schedule(&self, spec: TaskSpec) -> Result<(), SchedulerError> {
        let addr = self.actor.addr().ok_or(SchedulerError::Unavailable)?;
        addr.send(ScheduleTask { spec })
            .await
            .map_err(|_| SchedulerError::Unavailable)?
    }

    /// Removes a task; answers whether it existed.
    ///
    /// # Errors
    /// The scheduler is down.
    pub async fn cancel(&self, name: &str) -> Result<bool, SchedulerError> {
        let addr = self.actor.addr().ok_or(SchedulerError::Unavailable)?;
        addr.send(CancelTask {
            name: name.to_owned(),
        })
        .await
        .map_err(|_| SchedulerError::Unavailable)
    }

    /// Every task with its statistics. Read from the shared table, so it
    /// answers even while the scheduler restarts.
    pub fn list(&self) -> Vec<TaskInfo> {
        self.tasks.lock().values().map(|t| t.info.clone()).collect()
    }

    /// The scheduler's current address, if it runs.
    pub fn addr(&self) -> Option<Addr<SchedulerActor>> {
        self.actor.addr()
    }
}
