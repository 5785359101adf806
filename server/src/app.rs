//! Builds the supervision tree from config, binds the listener, serves, and
//! runs the staged shutdown when a control event arrives.
//!
//! The tree:
//!
//! ```text
//! root (one-for-one)
//! ├── http        the intake: drains before anything else stops   stage: intake
//! ├── storage     (one-for-one)
//! │   ├── db         the diesel-async pool, probes, outages       stage: storage
//! │   ├── redis      with Redis: the link, its probe, Pub/Sub     stage: storage
//! │   └── lease      with Redis: which node runs the services     stage: storage
//! ├── core        (one-for-one)
//! │   ├── events     event bus, ring of recent events             stage: core
//! │   ├── scheduler  named one-shot and periodic tasks            stage: core
//! │   └── sessions   the session registry behind resume           stage: core
//! ├── realtime    (one-for-one)
//! │   ├── connections  live sockets; drains them at shutdown       stage: connections
//! │   └── rooms        (one-for-one) rooms-0..N, a thread each     stage: connections
//! └── services    (one-for-one) trending, printers, files (one node
//!                 at a time with Redis), then your actors          stage: services
//! ```

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use prometheus::Registry;
use tracing::{info, info_span};

use holdfast_actors::scheduler::{Scheduler, TaskSpec};
use holdfast_actors::shutdown::{
    ControlEvent, ControlEvents, Shutdown, ShutdownReason, ShutdownReport,
};
use holdfast_actors::supervision::{
    AnyChildSpec, ChildRef, ChildSpec, SupervisionError, Supervisor, SupervisorSpec,
};
use holdfast_actors::{Kernel, Tree};

use crate::config::Settings;
use crate::http::observe::HttpMetrics;
use crate::http::{self, AppState};

/// Exit code when the listener cannot be bound (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for any other start-up failure (EX_SOFTWARE).
pub const EXIT_SOFTWARE: i32 = 70;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that validation would have refused (settings built in code
    /// skip [`Settings::load`]), e.g. an unreadable `tls.ca_file`.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The address is taken, or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as configured.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Two actors share a name.
    #[error("cannot build the supervision tree: {0}")]
    Tree(#[from] SupervisionError),
    /// The database handle could not be built (bad URL, unwritable directory).
    #[error("cannot set up the database: {0}")]
    Storage(String),
    /// A domain service (trending, printers) could not be set up.
    #[error("cannot set up the services: {0}")]
    Services(String),
    /// Metrics could not be registered (a duplicate name).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Bind { .. } => EXIT_UNAVAILABLE,
            StartError::Config(_) => crate::config::EXIT_CONFIG,
            _ => EXIT_SOFTWARE,
        }
    }
}

/// Sets up a server: config, plus the user's own actors and tasks.
pub struct Builder {
    settings: Settings,
    services: Vec<AnyChildSpec>,
    scheduler: Scheduler,
}

impl Builder {
    /// A server with these settings and no user actors.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            services: Vec::new(),
            scheduler: Scheduler::new(),
        }
    }

    /// Adds a user actor under the `services` supervisor. It then shows in
    /// `/health`, `/metrics` and the shutdown report with no other change.
    pub fn service(mut self, spec: impl Into<AnyChildSpec>) -> Self {
        self.services.push(spec.into());
        self
    }

    /// Adds a scheduled task, armed when the scheduler starts.
    ///
    /// # Errors
    /// A task of that name exists.
    pub fn task(self, spec: TaskSpec) -> Result<Self, holdfast_actors::scheduler::SchedulerError> {
        self.scheduler.with_task(spec)?;
        Ok(self)
    }

    /// Binds the listener, starts the tree and serves. Must run inside an
    /// actix system (`actix_rt::System`, `#[actix_rt::test]`).
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(self) -> Result<Server, StartError> {
        let Builder {
            settings,
            services,
            scheduler,
        } = self;
        // Before the bind: a bad CA bundle is a config error, no port taken.
        let tls = settings.tls.client()?;
        let listener = bind(&settings.server.host, settings.server.port)?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: format!("{}:{}", settings.server.host, settings.server.port),
            source,
        })?;

        let registry = Registry::new();
        let (shutdown, control) = Shutdown::new();
        let kernel = Kernel::new(registry.clone(), shutdown.clone(), &settings.kernel())?;
        let http_metrics = HttpMetrics::new(&registry)?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let backoff = settings.backoff();
        let intensity = settings.intensity();

        let shards = match settings.rooms.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let room_config = holdfast_actors::rooms::RoomConfig {
            history_size: settings.rooms.history_size,
            history_max_age: Duration::from_millis(settings.rooms.history_max_age_ms),
        };
        let cluster = match settings.redis.url.expose() {
            "" => None,
            _ => Some(
                holdfast_actors::redis::Redis::new(settings.redis.clone())
                    .map_err(StartError::Storage)?,
            ),
        };
        // With Redis, offsets and history are shared by every node through it.
        let broker = cluster.clone().map(|c| {
            holdfast_actors::rooms::broker::redis::RedisBroker::new(
                c,
                settings.rooms.history_size,
                Duration::from_millis(settings.redis.presence_ttl_ms),
            )
        });
        let rooms = holdfast_actors::rooms::Rooms::new(
            shards,
            room_config,
            &registry,
            broker
                .clone()
                .map(|b| Arc::new(b) as Arc<dyn holdfast_actors::rooms::Broker>),
        )?;
        let room_arbiters: Vec<Arbiter> = (0..shards).map(|_| Arbiter::new()).collect();
        let room_handles: Vec<_> = room_arbiters.iter().map(Arbiter::handle).collect();
        let connections = holdfast_actors::connections::Connections::new();
        let realtime = SupervisorSpec::new("realtime")
            .intensity(intensity)
            .child(
                connections
                    .spec(
                        Duration::from_millis(settings.ws.drain_spread_ms),
                        Duration::from_millis(settings.ws.drain_timeout_ms),
                    )
                    .backoff(backoff),
            )
            .child(
                rooms
                    .spec(&room_handles, intensity, &connections)
                    .backoff(backoff),
            );
        let db = holdfast_actors::db::Db::new(
            settings.database.clone(),
            &registry,
            kernel.events.clone(),
        )
        .map_err(StartError::Storage)?;
        let sessions = holdfast_actors::sessions::PersistentSessions::new(
            Duration::from_millis(settings.session.ttl_ms),
            settings.session.max_pending,
            db.clone(),
            &registry,
        )?;
        let expiry_store = sessions.clone();
        scheduler
            .with_task(TaskSpec::every(
                "session-expiry",
                Duration::from_secs(60),
                move || {
                    let store = expiry_store.clone();
                    async move {
                        match store.expire().await {
                            Ok(n) if n > 0 => {
                                tracing::debug!(expired = n, "expired sessions deleted")
                            }
                            Ok(_) => {}
                            Err(e) => return Err(e.to_string()),
                        }
                        Ok(())
                    }
                },
            ))
            .ok();
        let mut storage = SupervisorSpec::new("storage")
            .intensity(intensity)
            .child(db.spec().backoff(backoff));
        if let (Some(cluster), Some(broker)) = (&cluster, &broker) {
            storage = storage.child(cluster.spec(vec![broker.subscriber()]).backoff(backoff));
        }
        // Which node runs the single-node services: one at a time with Redis.
        let lease = match &cluster {
            Some(c) => holdfast_actors::lease::Lease::shared(
                c.clone(),
                Duration::from_millis(settings.redis.lease_ttl_ms),
            ),
            None => holdfast_actors::lease::Lease::single(),
        };
        if let Some(spec) = lease.spec() {
            storage = storage.child(spec.backoff(backoff));
        }
        let sessions_spec = holdfast_actors::sessions::SessionsActor::spec(
            sessions.clone(),
            rooms.clone(),
            Duration::from_millis(settings.session.flush_interval_ms),
            Duration::from_millis(settings.database.connect_timeout_ms) * 2,
        )
        .backoff(backoff);
        let core = SupervisorSpec::new("core")
            .intensity(intensity)
            .child(kernel.events.spec().backoff(backoff))
            .child(scheduler.spec().backoff(backoff))
            .child(sessions_spec);
        // The domain services: always in the tree, idle when not configured.
        let trending = holdfast_actors::services::trending::Trending::new(
            settings.trending.clone(),
            &tls,
            rooms.clone(),
            &registry,
            lease.clone(),
        )
        .map_err(StartError::Services)?;
        let printers = holdfast_actors::services::printers::Printers::new(
            settings.printers.clone(),
            &tls,
            rooms.clone(),
            &registry,
            lease.clone(),
        )
        .map_err(StartError::Services)?;
        let files = holdfast_actors::services::files::Files::new(
            settings.files.clone(),
            db.clone(),
            rooms.clone(),
            lease,
        );
        let mut user = SupervisorSpec::new("services")
            .intensity(intensity)
            .child(trending.spec().backoff(backoff))
            .child(printers.spec().backoff(backoff))
            .child(files.spec().backoff(backoff));
        for spec in services {
            user = user.child(spec);
        }
        let services_spec = user.into_child().backoff(backoff);
        let services_ref = services_spec.child_ref();
        let drain = Duration::from_millis(settings.shutdown.drain_delay_ms);
        let root = SupervisorSpec::new("root")
            .intensity(intensity)
            .child(http::intake::spec(drain, shutdown.clone(), addr.to_string()).backoff(backoff))
            .child(storage.into_child().backoff(backoff))
            .child(core.into_child().backoff(backoff))
            .child(realtime.into_child().backoff(backoff))
            .child(services_spec);
        let tree = info_span!("tree").in_scope(|| Tree::start(&kernel, root))?;

        let mut arbiters = vec![("main".to_owned(), Arbiter::current())];
        arbiters.extend(
            room_handles
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("rooms-{i}"), h.clone())),
        );
        let ws = web::Data::new(crate::ws::WsShared {
            settings: settings.ws.clone(),
            rooms: rooms.clone(),
            sessions: sessions.clone(),
            connections: connections.clone(),
            metrics: crate::ws::WsMetrics::new(&registry)?,
            shutdown: shutdown.clone(),
            verifier: (!settings.auth.jwt_secret.is_empty())
                .then(|| crate::auth::Verifier::new(settings.auth.jwt_secret.expose())),
        });
        let state = web::Data::new(AppState::new(tree, registry, arbiters));
        let watch_state = state.clone();
        let watch = TaskSpec::every(
            "health-watch",
            Duration::from_millis(settings.health.watch_interval_ms),
            move || {
                let state = watch_state.clone();
                async move {
                    state.tree.health().await;
                    Ok(())
                }
            },
        )
        .timeout(Duration::from_millis(settings.health.timeout_ms * 2));
        // A name clash here means a user task took the name; theirs wins.
        let _ = scheduler.with_task(watch);

        let http_metrics = web::Data::new(http_metrics);
        let server_settings = Arc::new(settings.server.clone());
        let app_state = state.clone();
        let app_ws = ws.clone();
        let admin = web::Data::new(http::admin::Admin::new(&settings.admin, scheduler.clone()));
        let trending_data = web::Data::new(trending);
        let mut server = HttpServer::new(move || {
            http::app(
                app_state.clone(),
                http_metrics.clone(),
                app_ws.clone(),
                admin.clone(),
                trending_data.clone(),
                &server_settings,
            )
        })
        .disable_signals()
        // Realtime frames are small and must not wait for Nagle's algorithm
        // (with delayed ACKs on the client, up to 40 ms per frame).
        .tcp_nodelay(true)
        .shutdown_timeout(settings.shutdown.http_timeout_ms.div_ceil(1000).max(1));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })?
            .run();
        let http = server.handle();
        actix_rt::spawn(server);
        // The database's start-up probes (bounded by its retries), then what
        // must be in memory before clients come: sessions and room offsets.
        db.started().await;
        if db.is_up() {
            match sessions.warm().await {
                Ok(n) => info!(sessions = n, "sessions loaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "sessions not loaded; they load when the database answers")
                }
            }
            match holdfast_actors::sessions::load_room_checkpoint(&db).await {
                Ok(rows) => {
                    let n = rooms.restore(
                        rows.into_iter()
                            .map(|r| (r.name, r.epoch, u64::try_from(r.last_offset).unwrap_or(0))),
                    );
                    info!(
                        rooms = n,
                        "room offsets restored from the last graceful shutdown"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "room checkpoint not loaded; rooms start new epochs")
                }
            }
        }
        // Start-up is done once every actor has answered a health request.
        state.tree.health().await;
        state.set_ready();
        info!(addr = %addr, version = env!("CARGO_PKG_VERSION"), "listening; ready");
        Ok(Server {
            addr,
            state,
            rooms,
            db: db.clone(),
            room_arbiters,
            http,
            control,
            shutdown,
            scheduler,
            services: services_ref,
            connections,
            http_timeout: Duration::from_millis(settings.shutdown.http_timeout_ms),
        })
    }
}

/// Liveness and load of a running server, as an outer watchdog sees them.
#[derive(Clone)]
pub struct Probe {
    state: web::Data<AppState>,
    connections: holdfast_actors::connections::Connections,
}

impl Probe {
    /// The event loops that did not answer within the health timeout; empty
    /// while the server is live (the same test as `/health/live`).
    pub async fn stalled_loops(&self) -> Vec<String> {
        http::health::stalled_loops(&self.state).await
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.count()
    }
}

/// Binds a listening socket with a deep accept backlog.
fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let fail = |source| StartError::Bind {
        addr: shown.clone(),
        source,
    };
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| {
            fail(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    Ok(socket.into())
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: web::Data<AppState>,
    rooms: holdfast_actors::rooms::Rooms,
    db: holdfast_actors::db::Db,
    /// One thread per room shard; stopped after the shutdown.
    room_arbiters: Vec<Arbiter>,
    http: ServerHandle,
    control: ControlEvents,
    shutdown: Shutdown,
    scheduler: Scheduler,
    services: ChildRef<Supervisor>,
    /// Live client connections (the systemd `STATUS=` line).
    connections: holdfast_actors::connections::Connections,
    http_timeout: Duration,
}

impl Server {
    /// The address it listens on (the real port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle that asks for the staged shutdown (signals, admin, tests).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The running tree.
    pub fn tree(&self) -> &Tree {
        &self.state.tree
    }

    /// The database handle.
    pub fn db(&self) -> &holdfast_actors::db::Db {
        &self.db
    }

    /// The room hubs (tests, chaos).
    pub fn rooms(&self) -> &holdfast_actors::rooms::Rooms {
        &self.rooms
    }

    /// The event loops that liveness watches (`/health/live`, the systemd
    /// watchdog), by name: `main` and one per room shard (`rooms-0`, ...).
    pub fn event_loops(&self) -> &[(String, ArbiterHandle)] {
        &self.state.arbiters
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// A probe of the server's liveness and load for an outer watchdog
    /// (systemd); cheap to clone, usable after the server is moved.
    pub fn probe(&self) -> Probe {
        Probe {
            state: self.state.clone(),
            connections: self.connections.clone(),
        }
    }

    /// The `services` supervisor, to add user actors at run time.
    pub fn services(&self) -> Option<Addr<Supervisor>> {
        self.services.addr()
    }

    /// Adds a user actor under `services` while the server runs.
    ///
    /// # Errors
    /// A duplicate name, a shutdown in progress, or `services` restarting.
    pub async fn add_service<A: holdfast_actors::supervision::Child>(
        &self,
        spec: ChildSpec<A>,
    ) -> Result<(), SupervisionError> {
        let services = self
            .services()
            .ok_or_else(|| SupervisionError::SupervisorDown("services".into()))?;
        self.tree().add_child(&services, spec).await
    }

    /// Waits for the first control event, runs the staged shutdown, then
    /// stops the HTTP server (bounded). Returns the report; its `exit_code`
    /// is the process's.
    pub async fn run_until_stopped(mut self) -> ShutdownReport {
        let reason = match self.control.recv().await {
            Some(ControlEvent::Shutdown(reason)) => reason,
            None => ShutdownReason::Requested {
                by: "every shutdown handle was dropped".into(),
            },
        };
        let report = self.state.tree.shutdown(reason).await;
        if tokio::time::timeout(self.http_timeout, self.http.stop(true))
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = self.http_timeout.as_millis() as u64,
                "HTTP server overran its stop timeout"
            );
        }
        for arbiter in &self.room_arbiters {
            arbiter.stop();
        }
        report
    }
}
