//! Helpers shared by the kernel's integration tests: a kernel per test, a
//! wait on a condition with a deadline, and `Worker`, a tiny supervised actor
//! that injects failures on request.
//!
//! Every test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use holdfast_actors::health::Check;
use holdfast_actors::shutdown::{ControlEvents, Shutdown};
use holdfast_actors::supervision::{Backoff, Child, ChildCtx, ChildRef, ChildSpec};
use holdfast_actors::{Kernel, KernelSettings, Tree, TreeHealth};
use parking_lot::Mutex;

/// How long a test waits for a condition before it fails.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How often a wait re-checks its condition.
pub const TICK: Duration = Duration::from_millis(5);

/// A kernel of its own for one test, and the receiver of its control events
/// (where a root escalation's shutdown request arrives).
pub fn kernel_with(settings: KernelSettings) -> (Kernel, ControlEvents) {
    let (shutdown, control) = Shutdown::new();
    // A fresh registry per test cannot already hold the kernel's metrics.
    let kernel = Kernel::new(prometheus::Registry::new(), shutdown, &settings).unwrap();
    (kernel, control)
}

/// [`kernel_with`] the default settings.
pub fn kernel() -> (Kernel, ControlEvents) {
    kernel_with(KernelSettings::default())
}

/// Polls `cond` every [`TICK`] until it holds; panics naming `what` once
/// `deadline` has passed. Uses tokio's clock, so it also works with paused time.
pub async fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if cond() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(TICK).await;
    }
}

/// [`wait_until`] for a condition that must be awaited.
pub async fn wait_until_async<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(TICK).await;
    }
}

/// Sweeps the tree's health until `cond` holds, and returns that sweep.
pub async fn health_until(
    tree: &Tree,
    what: &str,
    mut cond: impl FnMut(&TreeHealth) -> bool,
) -> TreeHealth {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let health = tree.health().await;
        if cond(&health) {
            return health;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up after {DEADLINE:?} waiting until {what}; last sweep: {:#?}",
            health.checks
        );
        tokio::time::sleep(TICK).await;
    }
}

/// The check of `name` in a sweep, if the tree still has that actor.
pub fn find<'a>(health: &'a TreeHealth, name: &str) -> Option<&'a Check> {
    health.checks.iter().find(|c| c.name == name)
}

/// The check of `name` in a sweep; the actor must be in the tree.
pub fn check<'a>(health: &'a TreeHealth, name: &str) -> &'a Check {
    find(health, name).unwrap_or_else(|| panic!("no check for '{name}' in {:#?}", health.checks))
}

/// The `details.reason` of a check, or "".
pub fn detail_reason(check: &Check) -> &str {
    check
        .details
        .get("reason")
        .and_then(|v| v.as_str())
        .unwrap_or("")
}

/// Waits until `child` has a running incarnation and returns its address.
pub async fn running<A: Actor>(child: &ChildRef<A>) -> Addr<A> {
    wait_until(DEADLINE, "the child is running", || child.addr().is_some()).await;
    // The wait above returned only once the slot held an address.
    child.addr().unwrap()
}

/// What a [`Worker`] leaves outside itself, shared by all its incarnations:
/// the test reads it, and it survives every crash.
#[derive(Default)]
pub struct Probe {
    /// Incarnations built by the factory.
    pub starts: AtomicU64,
    /// `ChildCtx::generation` handed to the newest incarnation.
    pub generation: AtomicU64,
    /// Crash-surviving counter: bumped by `Bump`, read by `Count`.
    pub kept: AtomicU64,
    /// The next this-many factory calls panic.
    pub factory_panics: AtomicU64,
    /// The next this-many incarnations panic in `started`.
    pub started_panics: AtomicU64,
    /// When each incarnation's `started` ran, on tokio's clock.
    pub started_at: Mutex<Vec<tokio::time::Instant>>,
}

impl Probe {
    /// A shareable probe with no faults armed.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Incarnations built so far.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::SeqCst)
    }

    /// Generation of the newest incarnation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// Takes one from `countdown` if it is above zero; true when it did.
fn take_one(countdown: &AtomicU64) -> bool {
    countdown
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A supervised actor that panics, stops and counts on request.
pub struct Worker {
    /// The child's name, put in panic messages.
    pub name: String,
    /// State shared with the test and with every other incarnation.
    pub probe: Arc<Probe>,
    /// Per-incarnation counter: lost when the actor crashes.
    pub own: u64,
}

impl Actor for Worker {
    type Context = Context<Self>;

    /// Panics while the probe's `started_panics` countdown lasts.
    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.probe
            .started_at
            .lock()
            .push(tokio::time::Instant::now());
        if take_one(&self.probe.started_panics) {
            panic!("boom in {} started", self.name);
        }
    }
}

impl Child for Worker {}

/// A worker child spec with no back-off, so that restarts are immediate.
pub fn worker(name: &str, probe: &Arc<Probe>) -> ChildSpec<Worker> {
    let probe = probe.clone();
    ChildSpec::new(name, move |cctx: &ChildCtx| {
        if take_one(&probe.factory_panics) {
            panic!("boom in {} factory", cctx.name);
        }
        probe.starts.fetch_add(1, Ordering::SeqCst);
        probe.generation.store(cctx.generation, Ordering::SeqCst);
        Worker {
            name: cctx.name.clone(),
            probe: probe.clone(),
            own: 0,
        }
    })
    .backoff(Backoff::none())
}

/// Makes the handler panic with "boom in {name}".
#[derive(Message)]
#[rtype(result = "()")]
pub struct Boom;

impl Handler<Boom> for Worker {
    type Result = ();

    fn handle(&mut self, _: Boom, _ctx: &mut Context<Self>) {
        panic!("boom in {}", self.name);
    }
}

/// Stops the worker normally, without a failure reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopNormally;

impl Handler<StopNormally> for Worker {
    type Result = ();

    fn handle(&mut self, _: StopNormally, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Adds one to the worker's own counter and to the probe's kept counter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Bump;

impl Handler<Bump> for Worker {
    type Result = ();

    fn handle(&mut self, _: Bump, _ctx: &mut Context<Self>) {
        self.own += 1;
        self.probe.kept.fetch_add(1, Ordering::SeqCst);
    }
}

/// Both counters of a worker, as it answers [`Count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// This incarnation's own counter.
    pub own: u64,
    /// The crash-surviving counter.
    pub kept: u64,
}

/// Asks a worker for its counters.
#[derive(Message)]
#[rtype(result = "Counts")]
pub struct Count;

impl Handler<Count> for Worker {
    type Result = MessageResult<Count>;

    fn handle(&mut self, _: Count, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(Counts {
            own: self.own,
            kept: self.probe.kept.load(Ordering::SeqCst),
        })
    }
}
