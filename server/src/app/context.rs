//! [`AppContext`]: the handles of a starting server, built once from the
//! settings, before any actor runs. Every part of the application, built in
//! or the user's, is mounted from them (see [`Mount`](super::Mount)).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::Registry;

use holdfast_actors::connections::Connections;
use holdfast_actors::db::Db;
use holdfast_actors::disconnects::Disconnects;
use holdfast_actors::events::Events;
use holdfast_actors::lease::Lease;
use holdfast_actors::online::Online;
use holdfast_actors::redis::Redis;
use holdfast_actors::rooms::broker::redis::RedisBroker;
use holdfast_actors::rooms::{Broker, RoomConfig, RoomOptions, Rooms};
use holdfast_actors::scheduler::Scheduler;
use holdfast_actors::sessions::PersistentSessions;
use holdfast_actors::shutdown::Shutdown;
use holdfast_actors::tls::ClientTls;
use holdfast_actors::Kernel;

use super::StartError;
use crate::config::Settings;
use crate::handlers::Namespaces;

/// The handles of a starting server: cheap to clone, usable from any actor.
#[derive(Clone)]
pub struct AppContext {
    pub(super) settings: Arc<Settings>,
    pub(super) registry: Registry,
    pub(super) kernel: Kernel,
    pub(super) tls: ClientTls,
    pub(super) db: Db,
    /// With `redis.url`: the link every node shares.
    pub(super) redis: Option<Redis>,
    /// With Redis: offsets, history and presence shared by every node.
    pub(super) broker: Option<RedisBroker>,
    pub(super) lease: Lease,
    pub(super) rooms: Rooms,
    /// One event loop per room shard.
    pub(super) room_loops: Vec<ArbiterHandle>,
    pub(super) connections: Connections,
    pub(super) sessions: Arc<PersistentSessions>,
    pub(super) scheduler: Scheduler,
    /// Which users are online: `user_online` / `user_offline`.
    pub online: Online,
    /// Closes a user's connections on every node.
    pub disconnects: Disconnects,
}

impl AppContext {
    /// Builds every handle; starts no actor (but one thread per room shard).
    pub(super) fn build(
        settings: Settings,
        kernel: Kernel,
        registry: Registry,
        scheduler: Scheduler,
        room_loops: Vec<ArbiterHandle>,
    ) -> Result<Self, StartError> {
        let tls = settings.tls.client()?;
        let redis = match settings.redis.url.expose() {
            "" => None,
            _ => Some(Redis::new(settings.redis.clone()).map_err(StartError::Storage)?),
        };
        // Each room's options, by its namespace.
        let options: Arc<dyn RoomOptions> = Arc::new(Namespaces::options(&settings.rooms));
        let broker = redis.clone().map(|r| {
            RedisBroker::new(
                r,
                options.clone(),
                Duration::from_millis(settings.redis.presence_ttl_ms),
            )
        });
        let any_presence_events = settings
            .rooms
            .namespaces
            .iter()
            .any(|ns| ns.presence_events);
        let rooms = Rooms::new(
            room_loops.len(),
            RoomConfig {
                options,
                presence_batch: any_presence_events
                    .then(|| Duration::from_millis(settings.rooms.presence_batch_ms)),
            },
            &registry,
            broker.clone().map(|b| Arc::new(b) as Arc<dyn Broker>),
        )?;
        // Which node runs the single-node services: one at a time with Redis.
        let lease = match &redis {
            Some(r) => Lease::shared(
                r.clone(),
                Duration::from_millis(settings.redis.lease_ttl_ms),
            ),
            None => Lease::single(),
        };
        let db = Db::new(settings.database.clone(), &registry, kernel.events.clone())
            .map_err(StartError::Storage)?;
        let connections = Connections::new();
        let disconnects = Disconnects::new(connections.clone(), redis.clone());
        let grace = Duration::from_millis(settings.session.ttl_ms);
        let online = match &redis {
            Some(r) => Online::shared(r.clone(), grace, kernel.events.clone()),
            None => Online::local(grace, kernel.events.clone()),
        };
        let sessions = PersistentSessions::new(
            Duration::from_millis(settings.session.ttl_ms),
            settings.session.max_pending,
            settings.session.max_detached,
            db.clone(),
            &registry,
        )?;
        Ok(Self {
            settings: Arc::new(settings),
            registry,
            kernel,
            tls,
            db,
            redis,
            broker,
            lease,
            rooms,
            room_loops,
            connections,
            sessions,
            scheduler,
            online,
            disconnects,
        })
    }

    /// The server's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The metrics registry (`/metrics`): register your own collectors here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The event bus.
    pub fn events(&self) -> &Events {
        &self.kernel.events
    }

    /// The shutdown handle.
    pub fn shutdown(&self) -> &Shutdown {
        &self.kernel.shutdown
    }

    /// The outbound HTTP client settings (`[tls]`) every service shares.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// The database pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The Redis link, when `redis.url` is set.
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }

    /// Which node runs single-node services (one at a time with Redis).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The room hubs: publish, presence, membership.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Live client connections.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The scheduler: add tasks with [`Scheduler::with_task`].
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
}
