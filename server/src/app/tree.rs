//! The supervision tree of a starting server, built from its handles: one
//! function per subtree, in the order of the tree in the [module docs](super).

use std::sync::Arc;
use std::time::Duration;

use holdfast_actors::scheduler::TaskSpec;
use holdfast_actors::sessions::SessionsActor;
use holdfast_actors::supervision::{
    AnyChildSpec, Backoff, ChildSpec, Intensity, Supervisor, SupervisorSpec,
};

use super::AppContext;
use crate::http;

/// The restart policy every supervisor and child of the tree shares.
struct Policy {
    backoff: Backoff,
    intensity: Intensity,
}

impl Policy {
    fn supervisor(&self, name: &str) -> SupervisorSpec {
        SupervisorSpec::new(name).intensity(self.intensity)
    }
}

/// The root and its subtrees; `services` holds the mounted parts' actors.
/// Returns the root and the `services` supervisor's spec handle.
pub(super) fn root(
    cx: &AppContext,
    services: Vec<AnyChildSpec>,
    addr: String,
) -> (
    SupervisorSpec,
    holdfast_actors::supervision::ChildRef<Supervisor>,
) {
    let policy = Policy {
        backoff: cx.settings.backoff(),
        intensity: cx.settings.intensity(),
    };
    let services = self::services(&policy, services);
    let services_ref = services.child_ref();
    let drain = Duration::from_millis(cx.settings.shutdown.drain_delay_ms);
    let root = policy
        .supervisor("root")
        .child(http::intake::spec(drain, cx.kernel.shutdown.clone(), addr).backoff(policy.backoff))
        .child(storage(cx, &policy).into_child().backoff(policy.backoff))
        .child(core(cx, &policy).into_child().backoff(policy.backoff))
        .child(realtime(cx, &policy).into_child().backoff(policy.backoff))
        .child(services);
    (root, services_ref)
}

/// `storage`: the database, and with Redis its link and the services lease.
fn storage(cx: &AppContext, policy: &Policy) -> SupervisorSpec {
    let mut storage = policy
        .supervisor("storage")
        .child(cx.db.spec().backoff(policy.backoff));
    if let (Some(redis), Some(broker)) = (&cx.redis, &cx.broker) {
        let mut subscribers = vec![broker.subscriber()];
        subscribers.extend(cx.disconnects.subscriber());
        storage = storage.child(redis.spec(subscribers).backoff(policy.backoff));
    }
    if let Some(spec) = cx.lease.spec() {
        storage = storage.child(spec.backoff(policy.backoff));
    }
    storage
}

/// `core`: the event bus, the scheduler and the session registry (whose
/// expired sessions a scheduled task deletes: every quarter of the session
/// TTL, between 1 s and 60 s, so that what the store holds is bounded by
/// the TTL, not by a fixed sweep).
fn core(cx: &AppContext, policy: &Policy) -> SupervisorSpec {
    let store = cx.sessions.clone();
    let sweep = Duration::from_millis(cx.settings.session.ttl_ms / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let expiry = TaskSpec::every("session-expiry", sweep, move || {
        let store = store.clone();
        async move {
            match store.expire().await {
                Ok(n) if n > 0 => tracing::debug!(expired = n, "expired sessions deleted"),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            Ok(())
        }
    });
    // A name clash means a user task took the name; theirs wins.
    let _ = cx.scheduler.with_task(expiry);
    let s = &cx.settings;
    let sessions = SessionsActor::spec(
        cx.sessions.clone(),
        cx.rooms.clone(),
        Duration::from_millis(s.session.flush_interval_ms),
        Duration::from_millis(s.database.connect_timeout_ms) * 2,
    );
    policy
        .supervisor("core")
        .child(cx.kernel.events.spec().backoff(policy.backoff))
        .child(cx.scheduler.spec().backoff(policy.backoff))
        .child(sessions.backoff(policy.backoff))
        .child(cx.online.spec().backoff(policy.backoff))
}

/// `realtime`: the live connections and the room hubs, one per shard.
fn realtime(cx: &AppContext, policy: &Policy) -> SupervisorSpec {
    let ws = &cx.settings.ws;
    let rooms = cx.rooms.clone();
    let connections = cx.connections.spec(
        Duration::from_millis(ws.drain_spread_ms),
        Duration::from_millis(ws.drain_timeout_ms),
        Some(Arc::new(move || Box::pin(rooms.flushed()))),
    );
    let rooms = cx.rooms.spec(
        &cx.room_loops,
        policy.intensity,
        policy.backoff,
        &cx.connections,
    );
    policy
        .supervisor("realtime")
        .child(connections.backoff(policy.backoff))
        .child(rooms.backoff(policy.backoff))
}

/// `services`: the mounted parts' actors, in mount order.
fn services(policy: &Policy, specs: Vec<AnyChildSpec>) -> ChildSpec<Supervisor> {
    let mut services = policy.supervisor("services");
    for spec in specs {
        services = services.child(spec);
    }
    services.into_child().backoff(policy.backoff)
}
