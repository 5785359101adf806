//! The `connections` actor: the registry of live client connections, and
//! their drain at shutdown.
//!
//! Owns: nothing but the drain; the registry itself ([`Connections`]) lives
//! outside the actor, shared with the transport, so it survives a restart.
//! Answers: health (how many connections are open).
//! On shutdown (stage `connections`): connections stop taking publishes
//! ([`Connections::is_draining`]); once what was accepted before has
//! reached every member's outlet (the `before_drain` barrier, at most
//! [`BARRIER_BOUND`]), it sends every connection a [`Drain`] with a random
//! `reconnect_after_ms` in `0..spread` (so that a fleet of clients does not
//! come back at the same instant), then stops once the registry is empty;
//! its shutdown timeout bounds the stage. So no member's socket closes
//! before a message that was acknowledged to someone reached it.
//! Restart policy: permanent, critical. Lost on a crash: nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;

use crate::health::{Health, HealthReply};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// How often a draining `connections` actor checks that every client left.
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// Longest wait for the `before_drain` barrier.
pub const BARRIER_BOUND: Duration = Duration::from_secs(1);

/// What the drain waits for before it closes any connection: everything
/// accepted before [`Connections::is_draining`] turned true has been handed
/// to the members' outlets (the rooms' `flushed`).
pub type Barrier = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Tells a connection to say `draining` and close with 1001.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Drain {
    /// When the client should come back.
    pub reconnect_after_ms: u64,
}

/// Tells a connection to close with an application close code
/// (4000–4999, PROTOCOL.md): the application or the server API ends it.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The close code.
    pub code: u16,
    /// The close reason, for people.
    pub reason: String,
    /// Also end the session, so that `resume` fails.
    pub forget: bool,
}

/// How the registry reaches one connection.
#[derive(Clone)]
pub struct Link {
    /// Its user.
    pub user: Arc<str>,
    /// For the drain at shutdown.
    pub drain: Recipient<Drain>,
    /// For [`Connections::disconnect_user`].
    pub disconnect: Recipient<Disconnect>,
}

/// Which registration of a session a connection holds: a session resumed
/// on a new connection is registered again, and the old connection's
/// deregistration must not remove the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration(u64);

/// Each live session's connection.
type Live = HashMap<Arc<str>, (Registration, Link)>;

/// The registry of live connections, by session; cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    live: Arc<Mutex<Live>>,
    next: Arc<AtomicU64>,
    /// Places taken under the connection limit ([`Slot`]s alive).
    taken: Arc<AtomicUsize>,
    /// Set when the drain begins, before any connection is told: from then
    /// on connections take no publish, so that none is accepted after some
    /// members' sockets closed (their resume after a restart could not
    /// replay it: history is in memory).
    draining: Arc<AtomicBool>,
}

/// One connection's place under the connection limit, taken before its
/// handshake ([`Connections::admit`]) and given back when dropped.
#[derive(Debug)]
pub struct Slot {
    taken: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connections {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the connection that now holds `session` (replacing any
    /// earlier one).
    pub fn register(&self, session: Arc<str>, link: Link) -> Registration {
        let registration = Registration(self.next.fetch_add(1, Ordering::Relaxed));
        self.live.lock().insert(session, (registration, link));
        registration
    }

    /// Removes `session`'s registration if it is still `registration`;
    /// answers whether it was (false: another connection holds the session
    /// now, having resumed it).
    pub fn deregister(&self, session: &str, registration: Registration) -> bool {
        let mut live = self.live.lock();
        let held = live.get(session).is_some_and(|(r, _)| *r == registration);
        if held {
            live.remove(session);
        }
        held
    }

    /// Closes every connection of `user` on this node with `code` and
    /// `reason`; answers how many.
    pub fn disconnect_user(&self, user: &str, code: u16, reason: &str, forget: bool) -> usize {
        let targets: Vec<Recipient<Disconnect>> = self
            .live
            .lock()
            .values()
            .filter(|(_, link)| &*link.user == user)
            .map(|(_, link)| link.disconnect.clone())
            .collect();
        for target in &targets {
            target.do_send(Disconnect {
                code,
                reason: reason.to_owned(),
                forget,
            });
        }
        targets.len()
    }

    /// One of `max` places for a new connection, taken atomically (so
    /// that upgrades at once never overshoot the limit); `None` when every
    /// place is taken.
    pub fn admit(&self, max: usize) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                taken: self.taken.clone(),
            })
    }

    /// Open connections.
    pub fn count(&self) -> usize {
        self.live.lock().len()
    }

    /// Whether the drain began (see the field).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The `connections` actor's spec: stage `connections`, bounded by
    /// `timeout`; the drain waits for `before_drain` (see the module docs).
    pub fn spec(
        &self,
        spread: Duration,
        timeout: Duration,
        before_drain: Option<Barrier>,
    ) -> ChildSpec<ConnectionsActor> {
        let registry = self.clone();
        ChildSpec::new("connections", move |_| ConnectionsActor {
            registry: registry.clone(),
            spread,
            before_drain: before_drain.clone(),
        })
        .stage(Stage::Connections)
        .shutdown_timeout(timeout)
    }
}

/// See the module docs.
pub struct ConnectionsActor {
    registry: Connections,
    /// `reconnect_after_ms` is drawn from `0..spread`.
    spread: Duration,
    /// Awaited between refusing publishes and closing connections.
    before_drain: Option<Barrier>,
}

impl ConnectionsActor {
    /// Tells every connection to drain, then stops once all have left.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        let spread = u64::try_from(self.spread.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let targets: Vec<Recipient<Drain>> = self
            .registry
            .live
            .lock()
            .values()
            .map(|(_, link)| link.drain.clone())
            .collect();
        for target in targets {
            target.do_send(Drain {
                reconnect_after_ms: rand::random_range(0..spread),
            });
        }
        ctx.run_interval(DRAIN_POLL, |act, ctx| {
            let mut live = act.registry.live.lock();
            live.retain(|_, (_, link)| link.drain.connected());
            if live.is_empty() {
                ctx.stop();
            }
        });
    }
}

impl Actor for ConnectionsActor {
    type Context = Context<Self>;
}

impl Child for ConnectionsActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy()
            .with("connections", self.registry.count())
            .with("draining", self.registry.is_draining())
            .into()
    }

    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        self.registry.draining.store(true, Ordering::SeqCst);
        let Some(barrier) = self.before_drain.clone() else {
            self.drain(ctx);
            return;
        };
        let flushed = async move {
            if tokio::time::timeout(BARRIER_BOUND, barrier())
                .await
                .is_err()
            {
                tracing::warn!("the rooms did not flush within 1 s; draining anyway");
            }
        };
        ctx.wait(flushed.into_actor(self).map(|(), act, ctx| act.drain(ctx)));
    }
}
