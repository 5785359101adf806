//! Holdfast's actors: the supervision kernel and every subsystem actor.
//!
//! A map of the crate, one line per module:
//!
//! - [`backoff`]: the one back-off (exponential, capped, jittered, reset) of every restart and retry.
//! - [`clock`]: the clock helpers: Unix milliseconds, RFC 3339, durations as milliseconds.
//! - [`supervision`]: child specs, supervisors, restart strategies, intensity and back-off.
//! - [`health`]: what actors report, and how `/health` folds it into one status.
//! - [`shutdown`]: stages, the one control path for stop requests, the shutdown report.
//! - [`lease`]: the `lease` actor, which node runs the single-node services (trending, printers, files).
//! - [`kernel`]: the shared handles ([`kernel::Kernel`]) and the running tree ([`kernel::Tree`]).
//! - [`disconnects`]: closing a user's connections on every node (the server API's disconnect).
//! - [`db`]: the `db` actor, the SQLite/PostgreSQL pool, migrations, outages.
//! - [`events`]: the `events` actor, the internal bus of typed events.
//! - [`handlers`]: what application handler actors receive and answer (RPC, room joins and publishes), and the call with a deadline.
//! - [`scheduler`]: the `scheduler` actor, named one-shot and periodic tasks.
//! - [`sessions`]: the session registry behind `resume` ([`sessions::SessionStore`]).
//! - [`connections`]: the `connections` actor, live client connections and their drain.
//! - [`metrics`]: the kernel's Prometheus metrics.
//! - [`online`]: the `online` actor, which users have a session anywhere: `user_online` / `user_offline`, once per cluster.
//! - [`redis`]: the `redis` actor and [`redis::Redis`]: the Redis link nodes share (pool, probe, Pub/Sub).
//! - [`rooms`]: the `rooms` actors, sharded room hubs (membership, offsets, history, presence), and the broker seam ([`rooms::Broker`]: local, Redis).
//! - [`services`]: the `trending`, `printers` and `files` actors, broadcasting to system rooms.
//! - [`window`]: the one sliding-window counter (restart intensity, the monitor's limits, abuse).
//! - [`settings`]: the error a subsystem's settings answer when a key cannot be used.
//! - [`tls`]: TLS for outbound clients (HTTPS, SMTP): ring, the system's CA certificates plus an optional bundle.
//!
//! # Names
//!
//! One rule for a subsystem's pair of types: the **handle** (cheap to
//! clone, what the rest of the program holds) is named for the subsystem,
//! and the **actor** behind it is the handle's name plus `Actor`:
//! [`connections::Connections`] / [`connections::ConnectionsActor`],
//! [`events::Events`] / [`events::EventsActor`], [`scheduler::Scheduler`] /
//! [`scheduler::SchedulerActor`], [`redis::Redis`] / [`redis::RedisActor`],
//! [`db::Db`] / [`db::DbActor`], [`lease::Lease`] / [`lease::LeaseActor`],
//! and the services' `Trending`, `Printers`, `Files` with their `…Actor`.
//! A handle in front of many actors of one kind names them for what they are:
//! [`rooms::Rooms`] and its hubs, one per shard (private to `rooms`). A
//! child's name in the tree (`/health/{name}`) is the module's name.
//! Messages are named for what they ask (`Join`, `Publish`, `Drain`); what
//! only the crate sends (a hub's `Announce`, `Reconcile`) is `pub(crate)`.
#![warn(missing_docs)]

pub mod backoff;
pub mod clock;
pub mod connections;
pub mod db;
pub mod disconnects;
pub mod events;
pub mod handlers;
pub mod health;
pub mod kernel;
pub mod lease;
pub mod metrics;
pub mod online;
pub mod redis;
pub mod rooms;
pub mod scheduler;
pub mod services;
pub mod sessions;
pub mod settings;
pub mod shutdown;
pub mod supervision;
pub mod tls;
pub mod trace;
pub mod window;

pub use kernel::{Kernel, KernelSettings, Tree, TreeHealth};
