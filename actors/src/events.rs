//! The `events` actor: the internal event bus.
//!
//! Owns: fan-out of typed [`Event`]s to subscribers, and the ring of recent
//! events that `/admin/events` shows.
//! Answers: `Publish` (through [`Events::publish`]).
//! Restart policy: permanent, non-critical, stage `core`.
//! Lost on a crash: nothing that was published. The ring, the subscriber list
//! and the events published while it is down live in [`Events`], outside the
//! actor, and its next incarnation delivers what queued up meanwhile. A
//! subscriber that does not keep up loses events (counted in
//! `holdfast_events_dropped_total`), never slows a publisher down.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::dev::SendError;
use actix::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::now_rfc3339;
use crate::health::{Health, HealthReply, Status};
use crate::metrics::KernelMetrics;
use crate::shutdown::{ShutdownReason, Stage};
use crate::supervision::{Child, ChildRef, ChildSpec};

/// Something that happened in the kernel or a subsystem.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A supervised actor started for the first time.
    ActorStarted {
        /// The actor.
        actor: String,
        /// Its supervisor.
        supervisor: String,
    },
    /// A supervised actor was started again.
    ActorRestarted {
        /// The actor.
        actor: String,
        /// Its supervisor.
        supervisor: String,
        /// Its restart count, this one included.
        restarts: u64,
    },
    /// A supervised actor exited abnormally.
    ActorFailed {
        /// The actor.
        actor: String,
        /// Its supervisor.
        supervisor: String,
        /// Panic message or failure reason.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity and gave up.
    ActorEscalated {
        /// The supervisor.
        supervisor: String,
        /// What tipped it over.
        reason: String,
    },
    /// An actor's health status changed between two health sweeps.
    HealthChanged {
        /// The actor.
        actor: String,
        /// Its previous status (`None` on the first sweep).
        from: Option<Status>,
        /// Its status now.
        to: Status,
    },
    /// The staged shutdown began.
    ShutdownStarted {
        /// Why.
        reason: ShutdownReason,
    },
    /// One shutdown stage finished.
    ShutdownStage {
        /// The stage.
        stage: Stage,
        /// How long it took.
        ms: u64,
    },
    /// A scheduled task run did not succeed.
    TaskFailed {
        /// The task.
        task: String,
        /// `error`, `panic` or `timeout`.
        outcome: String,
        /// What went wrong.
        error: String,
    },
    /// A user's first session anywhere in the cluster began (announced by
    /// one node).
    UserOnline {
        /// The user.
        user: String,
    },
    /// A user's last session ended: it closed and was not resumed within
    /// the session TTL, or it was ended (announced by one node).
    UserOffline {
        /// The user.
        user: String,
    },
    /// Anything a user actor wants to announce.
    Custom {
        /// A topic of the user's choosing.
        topic: String,
        /// Free-form payload.
        data: serde_json::Value,
    },
}

impl Event {
    /// The event's kind, as in its JSON `kind` field and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ActorStarted { .. } => "actor_started",
            Event::ActorRestarted { .. } => "actor_restarted",
            Event::ActorFailed { .. } => "actor_failed",
            Event::ActorEscalated { .. } => "actor_escalated",
            Event::HealthChanged { .. } => "health_changed",
            Event::ShutdownStarted { .. } => "shutdown_started",
            Event::ShutdownStage { .. } => "shutdown_stage",
            Event::TaskFailed { .. } => "task_failed",
            Event::UserOnline { .. } => "user_online",
            Event::UserOffline { .. } => "user_offline",
            Event::Custom { .. } => "custom",
        }
    }
}

/// An event as delivered: numbered and timestamped by the bus.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    /// Position in the bus's total order, from 1.
    pub seq: u64,
    /// When the bus accepted it, RFC 3339 UTC.
    pub at: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// The bus's state, held outside the actor so that it survives a restart.
struct BusState {
    /// Recent events, oldest first, at most `capacity`.
    ring: VecDeque<Arc<Envelope>>,
    /// Size of the ring and of `pending`.
    capacity: usize,
    /// The next envelope's `seq`.
    next_seq: u64,
    /// Where events go; closed ones are pruned on the next publish.
    subscribers: Vec<mpsc::Sender<Arc<Envelope>>>,
    /// Published while the actor was down; its next incarnation delivers them.
    pending: VecDeque<Event>,
}

/// The handle every publisher and subscriber holds. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    state: Arc<Mutex<BusState>>,
    actor: ChildRef<EventsActor>,
    metrics: Arc<KernelMetrics>,
}

impl Events {
    /// A bus keeping the `capacity` most recent events.
    pub fn new(capacity: usize, metrics: Arc<KernelMetrics>) -> Self {
        let state = BusState {
            ring: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            next_seq: 1,
            subscribers: Vec::new(),
            pending: VecDeque::new(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            actor: ChildRef::default(),
            metrics,
        }
    }

    /// Publishes an event. Never blocks and never fails: while the bus actor
    /// is down the event waits in a bounded buffer.
    pub fn publish(&self, event: Event) {
        self.metrics
            .events_published
            .with_label_values(&[event.kind()])
            .inc();
        let event = match self.actor.addr() {
            Some(addr) => match addr.try_send(Publish { event }) {
                Ok(()) => return,
                Err(SendError::Full(msg)) => return addr.do_send(msg),
                Err(SendError::Closed(msg)) => msg.event,
            },
            None => event,
        };
        let mut state = self.state.lock();
        if state.pending.len() >= state.capacity {
            state.pending.pop_front();
            self.metrics
                .events_dropped
                .with_label_values(&["bus_down"])
                .inc();
        }
        state.pending.push_back(event);
    }

    /// A new subscriber receiving every event from now on. A subscriber whose
    /// queue of `capacity` is full misses events rather than slowing the bus.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<Arc<Envelope>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.state.lock().subscribers.push(tx);
        rx
    }

    /// Up to `n` most recent events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Arc<Envelope>> {
        let state = self.state.lock();
        state
            .ring
            .iter()
            .skip(state.ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The child spec of the bus actor: permanent, non-critical, stage `core`.
    pub fn spec(&self) -> ChildSpec<EventsActor> {
        let state = self.state.clone();
        let metrics = self.metrics.clone();
        ChildSpec::new("events", move |_| EventsActor {
            state: state.clone(),
            metrics: metrics.clone(),
        })
        .critical(false)
        .stage(Stage::Core)
        .bind(&self.actor)
    }
}

/// The bus actor. See the module docs.
pub struct EventsActor {
    /// Ring, subscribers and pending events; shared with [`Events`].
    state: Arc<Mutex<BusState>>,
    metrics: Arc<KernelMetrics>,
}

impl EventsActor {
    fn deliver(&self, event: Event) {
        let mut state = self.state.lock();
        let envelope = Arc::new(Envelope {
            seq: state.next_seq,
            at: now_rfc3339(),
            event,
        });
        state.next_seq += 1;
        if state.ring.len() >= state.capacity {
            state.ring.pop_front();
        }
        state.ring.push_back(envelope.clone());
        let metrics = &self.metrics;
        state
            .subscribers
            .retain(|tx| match tx.try_send(envelope.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics
                        .events_dropped
                        .with_label_values(&["slow_subscriber"])
                        .inc();
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }
}

impl Actor for EventsActor {
    type Context = Context<Self>;

    /// Delivers what was published while the bus was down. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        let pending: Vec<Event> = self.state.lock().pending.drain(..).collect();
        for event in pending {
            self.deliver(event);
        }
    }
}

impl Child for EventsActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let state = self.state.lock();
        Health::healthy()
            .with("recent", state.ring.len())
            .with("subscribers", state.subscribers.len())
            .with("published", state.next_seq - 1)
            .into()
    }
}

/// Deliver one event to the ring and every subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The event.
    pub event: Event,
}

impl Handler<Publish> for EventsActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
        self.deliver(msg.event);
    }
}
