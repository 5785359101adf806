//! The `online` actor: which users have a session anywhere, and the
//! `user_online` / `user_offline` events, once per cluster.
//!
//! A user is online from the start of their first session to the end of
//! their last: a session ends when its connection closed and it was not
//! resumed within the grace (the session TTL, so that a reconnect is not an
//! offline), or at once when the application ended it (a disconnect that
//! forgets it). Each change is announced exactly once, by the node that
//! made it, on that node's event bus ([`Event::UserOnline`],
//! [`Event::UserOffline`]) and to the listeners the application registered
//! ([`Online::listen`]).
//!
//! Where the sessions are counted is a [`Tracker`]: this node's memory
//! alone, or Redis (`redis`), shared by every node, where each change is
//! one atomic script, so that two nodes never both announce it. Only
//! authenticated users count: an anonymous client's user id is made up per
//! connection.
//!
//! Owns: the sweep timer (sessions whose grace ran out) and, with Redis, the
//! refresh of this node's attached sessions (so that the sessions of a node
//! that died without a goodbye end too, a lease and a grace later).
//! Restart policy: permanent, non-critical, stage `core`. Lost on a crash:
//! nothing; the counts live in the tracker, outside the actor.

mod local;
mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};

use crate::events::{Event, Events};
use crate::health::{Health, HealthReply};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// A change of a user's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Their first session began.
    Online(Arc<str>),
    /// Their last session ended.
    Offline(Arc<str>),
}

/// Where sessions are counted per user. Every call is one atomic step; it
/// answers the changes it made, which the caller announces.
pub trait Tracker: Send + Sync + 'static {
    /// `session` of `user` is attached (new, or resumed).
    fn attach(
        &self,
        user: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>>;
    /// `session` is detached: it ends `grace` from now unless attached again
    /// (at once for a zero grace).
    fn detach(
        &self,
        user: &str,
        session: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>>;
    /// Ends the sessions whose grace ran out.
    fn sweep(&self) -> BoxFuture<'static, Result<Vec<UserChange>, String>>;
    /// Renews this node's attached sessions, `(user, session)` (a shared
    /// tracker expires those of a node that stopped renewing), putting back
    /// any it does not hold (an attach that failed): answers the users who
    /// are online by it. `None` when sessions never expire.
    fn refresh(
        &self,
        attached: Vec<(Arc<str>, Arc<str>)>,
    ) -> Option<BoxFuture<'static, Result<Vec<UserChange>, String>>>;
    /// How often [`Tracker::refresh`] is due; `None` when it is not needed.
    fn refresh_every(&self) -> Option<Duration>;
    /// What `/health/online` shows of it.
    fn describe(&self) -> Health;
}

/// Called with every change this node announces.
pub type Listener = Arc<dyn Fn(&UserChange) + Send + Sync>;

struct Inner {
    tracker: Arc<dyn Tracker>,
    grace: Duration,
    events: Events,
    listeners: RwLock<Vec<Listener>>,
    /// This node's attached sessions (session -> user), for the refresh.
    attached: Mutex<HashMap<Arc<str>, Arc<str>>>,
    /// Changes go to the tracker in the order they were made.
    order: tokio::sync::Mutex<()>,
    /// A change did not reach the tracker (Redis was down): the actor
    /// refreshes at its next tick, which makes up attaches; a detach that
    /// was lost ends by its lease, a lease and a grace later.
    behind: AtomicBool,
    /// A refresh is queued or running: ticks add no other.
    refreshing: AtomicBool,
}

/// The handle to the online users; cheap to clone.
#[derive(Clone)]
pub struct Online {
    inner: Arc<Inner>,
}

impl Online {
    /// Counting in this node's memory; a detached session ends `grace` later.
    pub fn local(grace: Duration, events: Events) -> Self {
        Self::with(Arc::new(local::LocalTracker::default()), grace, events)
    }

    /// Counting in Redis, shared by every node on it.
    pub fn shared(redis: crate::redis::Redis, grace: Duration, events: Events) -> Self {
        Self::with(
            Arc::new(redis::RedisTracker::new(redis, grace)),
            grace,
            events,
        )
    }

    fn with(tracker: Arc<dyn Tracker>, grace: Duration, events: Events) -> Self {
        Self {
            inner: Arc::new(Inner {
                tracker,
                grace,
                events,
                listeners: RwLock::new(Vec::new()),
                attached: Mutex::new(HashMap::new()),
                order: tokio::sync::Mutex::new(()),
                behind: AtomicBool::new(false),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    /// Calls `listener` with every change this node announces.
    pub fn listen(&self, listener: Listener) {
        self.inner.listeners.write().push(listener);
    }

    /// `session` of `user` is attached (a new connection, or a resume).
    pub fn attach(&self, user: &Arc<str>, session: &Arc<str>) {
        self.inner
            .attached
            .lock()
            .insert(session.clone(), user.clone());
        let step = self.inner.tracker.attach(user, session);
        self.apply(step);
    }

    /// `session`'s connection closed: it ends after the grace unless resumed.
    pub fn detach(&self, user: &Arc<str>, session: &Arc<str>) {
        self.inner.attached.lock().remove(session);
        let step = self.inner.tracker.detach(user, session, self.inner.grace);
        self.apply(step);
    }

    /// `session` ends now (it cannot be resumed any more).
    pub fn end(&self, user: &Arc<str>, session: &Arc<str>) {
        self.inner.attached.lock().remove(session);
        let step = self.inner.tracker.detach(user, session, Duration::ZERO);
        self.apply(step);
    }

    /// Runs one tracker step after those before it, and announces its changes.
    fn apply(&self, step: BoxFuture<'static, Result<Vec<UserChange>, String>>) {
        let inner = self.inner.clone();
        let order = async move {
            let _turn = inner.order.lock().await;
            match step.await {
                Ok(changes) => inner.announce(changes),
                Err(e) => {
                    inner.behind.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %e, "online users not updated; made up when the tracker answers");
                }
            }
        };
        actix_rt::spawn(order);
    }

    /// The actor's spec: permanent, non-critical, stage `core`.
    pub fn spec(&self) -> ChildSpec<OnlineActor> {
        let inner = self.inner.clone();
        ChildSpec::new("online", move |_| OnlineActor {
            inner: inner.clone(),
        })
        .critical(false)
        .stage(Stage::Core)
    }
}

impl Inner {
    fn announce(&self, changes: Vec<UserChange>) {
        for change in changes {
            let event = match &change {
                UserChange::Online(user) => Event::UserOnline {
                    user: user.to_string(),
                },
                UserChange::Offline(user) => Event::UserOffline {
                    user: user.to_string(),
                },
            };
            tracing::debug!(kind = event.kind(), "user status");
            self.events.publish(event);
            for listener in self.listeners.read().iter() {
                listener(&change);
            }
        }
    }
}

/// The online actor. See the module docs.
pub struct OnlineActor {
    inner: Arc<Inner>,
}

impl OnlineActor {
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let inner = self.inner.clone();
        let step = inner.tracker.sweep();
        ctx.spawn(
            async move {
                let _turn = inner.order.lock().await;
                match step.await {
                    Ok(changes) => inner.announce(changes),
                    Err(e) => {
                        tracing::debug!(error = %e, "sweep of online users failed; next time")
                    }
                }
            }
            .into_actor(self),
        );
    }

    /// Renews this node's attached sessions, as they are when the step's
    /// turn comes (so that a detach made before it is not undone), and
    /// announces the users it found online.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.inner.refreshing.swap(true, Ordering::SeqCst) {
            return; // one at a time, however slow the tracker is
        }
        let inner = self.inner.clone();
        ctx.spawn(
            async move {
                let _done = Refreshing(&inner.refreshing);
                let _turn = inner.order.lock().await;
                inner.behind.store(false, Ordering::SeqCst);
                let attached: Vec<(Arc<str>, Arc<str>)> = inner
                    .attached
                    .lock()
                    .iter()
                    .map(|(session, user)| (user.clone(), session.clone()))
                    .collect();
                let Some(step) = inner.tracker.refresh(attached) else {
                    return;
                };
                match step.await {
                    Ok(changes) => inner.announce(changes),
                    Err(e) => {
                        inner.behind.store(true, Ordering::SeqCst);
                        tracing::debug!(error = %e, "refresh of online sessions failed; next tick");
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Clears the refresh flag when the refresh ends, however it ends (a
/// restarted actor drops its futures).
struct Refreshing<'a>(&'a AtomicBool);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Actor for OnlineActor {
    type Context = Context<Self>;

    /// Sweeps every quarter of the grace (within 50 ms to 1 s), refreshing
    /// too when a change did not reach the tracker; refreshes when the
    /// tracker asks for it. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.inner.grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        ctx.run_interval(every, |act, ctx| {
            if act.inner.behind.load(Ordering::SeqCst) {
                act.refresh(ctx);
            }
            act.sweep(ctx);
        });
        if let Some(every) = self.inner.tracker.refresh_every() {
            self.refresh(ctx);
            ctx.run_interval(every, |act, ctx| act.refresh(ctx));
        }
    }
}

impl Child for OnlineActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let attached = self.inner.attached.lock().len();
        self.inner
            .tracker
            .describe()
            .with("attached_here", attached)
            .with("behind", self.inner.behind.load(Ordering::SeqCst))
            .with("grace_ms", self.inner.grace.as_millis() as u64)
            .into()
    }
}
