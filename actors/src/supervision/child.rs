//! What a supervised actor is, and how one incarnation of it is started and
//! watched.
//!
//! A supervisor never calls `Actor::start`. It builds the actor with the
//! spec's factory on the child's arbiter, spawns the actor's context future
//! itself and awaits that task: a normal end is a stop, a panicked task is a
//! failure with the panic message as its reason. A panic in any handler or
//! lifecycle hook therefore ends that one task; the arbiter and every other
//! actor on it keep running.
//!
//! The supervisor reaches the actor through a control channel spawned into
//! the actor's own context, so every actor answers health, stop and (chaos)
//! crash requests without implementing any message handler.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::{wrap_stream, ActorFutureExt, ActorStreamExt};
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures::channel::{mpsc, oneshot};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::policy::RestartType;
use super::supervisor::{ChildExited, Supervisor, SupervisorSpec};
use crate::backoff::Backoff;
use crate::health::{Health, HealthReply};
use crate::kernel::Kernel;
use crate::shutdown::Stage;

/// An actor that can be supervised. Both methods have defaults, so the
/// smallest child is `impl Child for MyActor {}`.
pub trait Child: Actor<Context = Context<Self>> {
    /// Answers a health request. Runs inside the actor, so an actor whose
    /// event loop is stuck does not answer and is reported unhealthy.
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy().into()
    }

    /// Begins a graceful stop. The default stops at once; an actor with work
    /// to flush does it and calls `ctx.stop()` when done. The supervisor
    /// abandons it once the spec's shutdown timeout passes.
    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Requests the supervisor sends into a running child.
pub(crate) enum Control {
    /// Answer on `reply` with the actor's own health.
    Health { reply: oneshot::Sender<Health> },
    /// Begin a graceful stop.
    Shutdown,
    /// Panic with `reason`, inside the actor's own context, so that its
    /// supervisor sees a real panic (the admin API's chaos route).
    Crash { reason: String },
}

/// How an incarnation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It stopped on its own or on request, without a failure reason.
    Normal,
    /// It stopped abnormally: a panic, a failed factory, or a reason it set
    /// with [`ChildCtx::fail`].
    Failed(String),
}

impl Exit {
    /// Whether the exit counts as a failure.
    pub fn is_abnormal(&self) -> bool {
        matches!(self, Exit::Failed(_))
    }
}

/// What the factory is handed when it builds an incarnation.
#[derive(Clone)]
pub struct ChildCtx {
    /// The child's name.
    pub name: String,
    /// 0 for the first start, then +1 per restart.
    pub generation: u64,
    /// Shared kernel handles: events, metrics, shutdown.
    pub kernel: Kernel,
    /// Where a failure reason is left for the supervisor.
    exit: Arc<Mutex<Option<String>>>,
}

impl ChildCtx {
    /// Marks the coming stop as a failure with `reason`; the actor then calls
    /// `ctx.stop()`. A transient child stopped this way is restarted.
    pub fn fail(&self, reason: impl Into<String>) {
        *self.exit.lock() = Some(reason.into());
    }
}

/// A stable handle to a supervised actor: the address of whichever
/// incarnation is running now. `None` while the actor is down or restarting,
/// which callers turn into an `unavailable` answer, never silence.
pub struct ChildRef<A: Actor> {
    slot: Arc<RwLock<Option<Incumbent<A>>>>,
}

/// The generation and address of the incarnation a [`ChildRef`] points at.
type Incumbent<A> = (u64, Addr<A>);

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> Default for ChildRef<A> {
    fn default() -> Self {
        Self {
            slot: Arc::new(RwLock::new(None)),
        }
    }
}

impl<A: Actor> ChildRef<A> {
    /// The running incarnation's address, if one is running.
    pub fn addr(&self) -> Option<Addr<A>> {
        self.slot.read().as_ref().map(|(_, a)| a.clone())
    }

    fn set(&self, generation: u64, addr: Addr<A>) {
        *self.slot.write() = Some((generation, addr));
    }

    /// Clears the slot unless a newer incarnation already filled it.
    fn clear(&self, generation: u64) {
        let mut slot = self.slot.write();
        if matches!(*slot, Some((g, _)) if g == generation) {
            *slot = None;
        }
    }
}

/// Options every child spec carries, whatever its actor type.
#[derive(Clone)]
pub struct ChildOptions {
    /// Unique name in the whole tree (it keys `/health/{name}`).
    pub name: String,
    /// When it is restarted.
    pub restart: RestartType,
    /// Whether its being unhealthy makes the node unhealthy and not ready.
    pub critical: bool,
    /// The shutdown stage it stops in.
    pub stage: Stage,
    /// How long its stop may take before it is abandoned.
    pub shutdown_timeout: Duration,
    /// Delays between consecutive restarts.
    pub backoff: Backoff,
    /// The arbiter it runs on; `None` runs it on its supervisor's arbiter.
    pub arbiter: Option<ArbiterHandle>,
}

/// A number unique in the process, for [`ChildRef`] slots.
fn next_ticket() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Mailbox capacity of a supervised actor (actix's default); `do_send`
/// ignores it, `send` and `try_send` wait or fail past it.
const MAILBOX_CAPACITY: usize = 16;

/// Default time a child may take to stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything needed to start one incarnation.
pub(crate) struct StartArgs {
    pub generation: u64,
    pub supervisor: Addr<Supervisor>,
    pub arbiter: ArbiterHandle,
    pub kernel: Kernel,
}

/// A running (or starting) incarnation as its supervisor sees it.
#[derive(Clone)]
pub(crate) struct Incarnation {
    /// Health and stop requests.
    pub control: mpsc::UnboundedSender<Control>,
    /// Becomes `Some` once the task has ended.
    pub exit: watch::Receiver<Option<Exit>>,
    /// Cancels the actor's task when it overran its shutdown timeout.
    abort: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
}

impl Incarnation {
    /// Abandons the incarnation: cancels its task at its next await point.
    /// An actor blocking its thread is not stopped by this; it is only no
    /// longer waited on.
    pub fn abort(&self) {
        if let Some(handle) = self.abort.lock().take() {
            handle.abort();
        }
    }
}

/// Builds and starts incarnations of one actor type; type-erased so that a
/// supervisor can hold children of any type.
pub(crate) trait Starter: Send + Sync {
    fn start(&self, opts: &ChildOptions, args: StartArgs) -> Incarnation;
    /// The address slot when the child is itself a supervisor.
    fn as_supervisor(&self) -> Option<ChildRef<Supervisor>>;
}

/// The factory that builds one incarnation of `A`.
type Factory<A> = Arc<dyn Fn(&ChildCtx) -> A + Send + Sync>;

struct TypedStarter<A: Child> {
    factory: Factory<A>,
    slot: ChildRef<A>,
}

impl<A: Child> Starter for TypedStarter<A> {
    fn start(&self, opts: &ChildOptions, args: StartArgs) -> Incarnation {
        let (control, control_rx) = mpsc::unbounded::<Control>();
        let (exit_tx, exit_rx) = watch::channel(None);
        let factory = self.factory.clone();
        let slot = self.slot.clone();
        let name = opts.name.clone();
        let StartArgs {
            generation,
            supervisor,
            arbiter,
            kernel,
        } = args;
        let exit_cell = Arc::new(Mutex::new(None));
        let abort = Arc::new(Mutex::new(None));
        let abort_in_task = abort.clone();
        let cctx = ChildCtx {
            name: name.clone(),
            generation,
            kernel,
            exit: exit_cell.clone(),
        };

        // The mailbox exists before the actor does, so the handle has an
        // address as soon as `start` returns; messages wait until it runs.
        let (tx, rx) = actix::dev::channel::channel::<A>(MAILBOX_CAPACITY);
        // Slots are keyed by a ticket unique in the process, not by the
        // generation: a restarted supervisor counts generations from 0 again,
        // and a late exit of an old incarnation must never clear a new one.
        let ticket = next_ticket();
        slot.set(ticket, Addr::new(tx));

        // Reports the exit to the supervisor and to anyone awaiting it.
        let report = {
            let supervisor = supervisor.clone();
            let name = name.clone();
            let slot = slot.clone();
            move |exit: Exit| {
                slot.clear(ticket);
                exit_tx.send_replace(Some(exit.clone()));
                supervisor.do_send(ChildExited {
                    name,
                    generation,
                    exit,
                });
            }
        };
        let report = Arc::new(Mutex::new(Some(report)));
        let report_in_task = report.clone();

        let spawned = arbiter.spawn_fn(move || {
            let report = move |exit| {
                if let Some(r) = report_in_task.lock().take() {
                    r(exit)
                }
            };
            let actor = match std::panic::catch_unwind(AssertUnwindSafe(|| factory(&cctx))) {
                Ok(actor) => actor,
                Err(payload) => {
                    report(Exit::Failed(format!(
                        "factory panicked: {}",
                        panic_message(&*payload)
                    )));
                    return;
                }
            };
            let mut ctx = Context::<A>::with_receiver(rx);
            ctx.spawn(
                wrap_stream::<_, A>(control_rx)
                    .map(|request, actor, ctx| match request {
                        Control::Health { reply } => match actor.health(ctx) {
                            HealthReply::Ready(h) => {
                                let _ = reply.send(h);
                            }
                            HealthReply::Pending(fut) => {
                                ctx.spawn(fut.map(|h, _, _| {
                                    let _ = reply.send(h);
                                }));
                            }
                        },
                        Control::Shutdown => actor.shutdown(ctx),
                        // Unwinds out of this context's poll, ending the actor's
                        // task like a panic in any of its handlers would.
                        Control::Crash { reason } => panic!("{reason}"),
                    })
                    .finish(),
            );
            let task = actix_rt::spawn(ctx.into_future(actor));
            *abort_in_task.lock() = Some(task.abort_handle());
            actix_rt::spawn(async move {
                let exit = match task.await {
                    Ok(()) => match exit_cell.lock().take() {
                        Some(reason) => Exit::Failed(reason),
                        None => Exit::Normal,
                    },
                    Err(e) if e.is_panic() => {
                        Exit::Failed(format!("panicked: {}", panic_message(&*e.into_panic())))
                    }
                    Err(_) => Exit::Failed("aborted".into()),
                };
                report(exit);
            });
        });
        if !spawned {
            if let Some(r) = report.lock().take() {
                r(Exit::Failed("its arbiter is not running".into()));
            }
        }
        Incarnation {
            control,
            exit: exit_rx,
            abort,
        }
    }

    fn as_supervisor(&self) -> Option<ChildRef<Supervisor>> {
        (&self.slot as &dyn Any)
            .downcast_ref::<ChildRef<Supervisor>>()
            .cloned()
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// How to build, run, restart and stop one child.
///
/// ```
/// use actix::prelude::*;
/// use holdfast_actors::supervision::{Child, ChildSpec, RestartType};
/// use holdfast_actors::shutdown::Stage;
///
/// struct Greeter;
/// impl Actor for Greeter { type Context = Context<Self>; }
/// impl Child for Greeter {}
///
/// let spec = ChildSpec::new("greeter", |_| Greeter)
///     .restart(RestartType::Transient)
///     .stage(Stage::Services)
///     .critical(false);
/// let greeter = spec.child_ref(); // the address of whichever incarnation runs
/// # let _ = greeter;
/// ```
pub struct ChildSpec<A: Child> {
    opts: ChildOptions,
    starter: Arc<TypedStarter<A>>,
    /// The nested supervisor's spec, when this child is a supervisor.
    nested: Option<SupervisorSpec>,
}

impl<A: Child> ChildSpec<A> {
    /// A permanent, critical child in the `services` stage with the default
    /// back-off and a 5 s shutdown timeout. `factory` builds each incarnation;
    /// state that must survive a crash is captured by the factory and handed
    /// to every new incarnation.
    pub fn new(
        name: impl Into<String>,
        factory: impl Fn(&ChildCtx) -> A + Send + Sync + 'static,
    ) -> Self {
        let factory: Factory<A> = Arc::new(factory);
        Self {
            opts: ChildOptions {
                name: name.into(),
                restart: RestartType::Permanent,
                critical: true,
                stage: Stage::Services,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                backoff: Backoff::default(),
                arbiter: None,
            },
            starter: Arc::new(TypedStarter {
                factory,
                slot: ChildRef::default(),
            }),
            nested: None,
        }
    }

    /// Points this spec at an existing handle, so that code holding `child_ref`
    /// before the spec was built reaches the running actor.
    pub fn bind(mut self, child_ref: &ChildRef<A>) -> Self {
        let factory = self.starter.factory.clone();
        self.starter = Arc::new(TypedStarter {
            factory,
            slot: child_ref.clone(),
        });
        self
    }

    /// Records the nested supervisor's spec (see `SupervisorSpec::into_child`).
    pub(crate) fn with_nested(mut self, spec: SupervisorSpec) -> Self {
        self.nested = Some(spec);
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.opts.restart = restart;
        self
    }

    /// Sets whether the child is critical.
    pub fn critical(mut self, critical: bool) -> Self {
        self.opts.critical = critical;
        self
    }

    /// Sets the shutdown stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.opts.stage = stage;
        self
    }

    /// Sets the shutdown timeout.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.opts.shutdown_timeout = timeout;
        self
    }

    /// Sets the restart back-off.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.opts.backoff = backoff;
        self
    }

    /// Runs the child on `arbiter` (its own thread) instead of its supervisor's.
    pub fn arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.opts.arbiter = Some(arbiter);
        self
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// A handle that always points at the running incarnation.
    pub fn child_ref(&self) -> ChildRef<A> {
        self.starter.slot.clone()
    }
}

/// A child spec with its actor type erased, as a supervisor holds it.
#[derive(Clone)]
pub struct AnyChildSpec {
    pub(crate) opts: ChildOptions,
    pub(crate) starter: Arc<dyn Starter>,
    pub(crate) nested: Option<SupervisorSpec>,
}

impl AnyChildSpec {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.opts.name
    }
}

impl<A: Child> From<ChildSpec<A>> for AnyChildSpec {
    fn from(spec: ChildSpec<A>) -> Self {
        AnyChildSpec {
            opts: spec.opts,
            starter: spec.starter,
            nested: spec.nested,
        }
    }
}
