//! Starting a server: [`Builder`] takes the settings and the parts of the
//! application, builds the handles ([`AppContext`]), mounts every part
//! ([`Mount`]: the built-in services first, then the user's), starts the
//! supervision tree, binds and serves; [`Server`] runs the staged shutdown
//! when a control event arrives.
//!
//! Files: `context` (the handles), `mount` (what a part adds), `builtin`
//! (the built-in services), `tree` (the supervisors), `listener` (the
//! socket), `front` (the HTTP server over it), `server` (the running server), `error` (why a start failed).
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

mod builtin;
mod context;
mod error;
mod front;
mod listener;
mod mount;
mod server;
mod tree;

use std::time::Duration;

use actix::prelude::*;
use actix_web::web;
use prometheus::Registry;
use tracing::{info, info_span};

use holdfast_actors::scheduler::{Scheduler, SchedulerError, TaskSpec};
use holdfast_actors::shutdown::Shutdown;
use holdfast_actors::supervision::{AnyChildSpec, Child, ChildSpec};
use holdfast_actors::{Kernel, Tree};

use crate::config::{NamespaceSettings, Settings};
use crate::handlers::{
    Application, JoinRequest, LeaveNotice, PublishRequest, RoomHandler, Rpc, Target, UserOffline,
    UserOnline,
};
use crate::http::observe::HttpMetrics;
use crate::http::{self, AppState};

pub use context::AppContext;
pub use error::{StartError, EXIT_SOFTWARE, EXIT_UNAVAILABLE};
pub use mount::Mount;
pub(crate) use mount::Routes;
pub use server::{Probe, Server};

/// Sets up a server: config, plus the parts of the application (actors,
/// routes) and scheduled tasks.
pub struct Builder {
    settings: Settings,
    parts: Vec<mount::Part>,
    scheduler: Scheduler,
}

impl Builder {
    /// A server with these settings and the built-in services.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            parts: Vec::new(),
            scheduler: Scheduler::new(),
        }
        .mount(builtin::trending)
        .mount(builtin::printers)
        .mount(builtin::files)
        .mount(builtin::server_api)
    }

    /// The settings the server will start with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Adds a part of the application, built from the server's handles when
    /// it starts: its actors (under `services`) and routes. Parts are mounted
    /// in the order they were added; an error stops the start.
    pub fn mount(
        mut self,
        part: impl FnOnce(&mut Mount<'_>) -> Result<(), StartError> + 'static,
    ) -> Self {
        self.parts.push(Box::new(part));
        self
    }

    /// Adds a user actor under the `services` supervisor. It then shows in
    /// `/health`, `/metrics` and the shutdown report with no other change.
    pub fn service(self, spec: impl Into<AnyChildSpec>) -> Self {
        let spec = spec.into();
        self.mount(move |mount| {
            mount.service(spec);
            Ok(())
        })
    }

    /// Adds `spec` under `services` and serves the RPC methods starting
    /// with `prefix` by it (see [`handlers`](crate::handlers)).
    pub fn rpc<A>(self, prefix: &str, spec: ChildSpec<A>) -> Self
    where
        A: Child + Handler<Rpc>,
    {
        let prefix = prefix.to_owned();
        self.mount(move |mount| {
            mount.rpc(&prefix, Target::of(spec.child_ref()))?;
            mount.service(spec);
            Ok(())
        })
    }

    /// Adds `spec` under `services` as the room handler `name`, which
    /// namespaces name in their `handler` option (see
    /// [`handlers`](crate::handlers)).
    pub fn room_handler<A>(self, name: &str, spec: ChildSpec<A>) -> Self
    where
        A: Child + Handler<JoinRequest> + Handler<PublishRequest> + Handler<LeaveNotice>,
    {
        let name = name.to_owned();
        self.mount(move |mount| {
            mount.room_handler(&name, RoomHandler::of(spec.child_ref()))?;
            mount.service(spec);
            Ok(())
        })
    }

    /// Adds `spec` under `services` as a user handler: it is told
    /// [`UserOnline`](crate::handlers::UserOnline) when a user's first
    /// session anywhere begins and
    /// [`UserOffline`](crate::handlers::UserOffline) when their last ends
    /// (after the session TTL, so a reconnect is no offline), once per
    /// cluster, on the node that saw the change.
    pub fn user_handler<A>(self, spec: ChildSpec<A>) -> Self
    where
        A: Child + Handler<UserOnline> + Handler<UserOffline>,
    {
        self.mount(move |mount| {
            mount
                .context()
                .online
                .listen(crate::handlers::user_listener(spec.child_ref()));
            mount.service(spec);
            Ok(())
        })
    }

    /// Adds a room namespace (as a `[[rooms.namespaces]]` table of the config
    /// file would), after those of the settings; checked with them when the
    /// server starts.
    pub fn namespace(mut self, namespace: NamespaceSettings) -> Self {
        self.settings.rooms.namespaces.push(namespace);
        self
    }

    /// Adds a scheduled task, armed when the scheduler starts.
    ///
    /// # Errors
    /// A task of that name exists.
    pub fn task(self, spec: TaskSpec) -> Result<Self, SchedulerError> {
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
            mut settings,
            mut parts,
            scheduler,
        } = self;
        // Last, so that the application's own `/` wins.
        crate::demo::namespaces(&mut settings);
        parts.push(Box::new(crate::demo::mount));
        // Before the bind: a bad CA bundle, or a namespace from the builder
        // the config file would have refused, is a config error, no port taken.
        settings.tls.client()?;
        settings.rooms.validate()?;
        let listener = listener::bind(&settings.server.host, settings.server.port)?;
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
        let shards = match settings.rooms.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let room_arbiters: Vec<Arbiter> = (0..shards).map(|_| Arbiter::new()).collect();
        let room_loops = room_arbiters.iter().map(Arbiter::handle).collect();
        let cx = AppContext::build(
            settings,
            kernel.clone(),
            registry.clone(),
            scheduler,
            room_loops,
        )?;

        let mut mount = Mount::new(&cx);
        for part in parts {
            part(&mut mount)?;
        }
        let Mount {
            services,
            routes,
            rpc,
            room_handlers,
            ..
        } = mount;
        let application = Application::new(&cx.settings, rpc, &room_handlers)?;
        let (root, services) = tree::root(&cx, services, addr.to_string());
        let tree = info_span!("tree").in_scope(|| Tree::start(&kernel, root))?;

        let mut arbiters = vec![("main".to_owned(), Arbiter::current())];
        arbiters.extend(
            cx.room_loops
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("rooms-{i}"), h.clone())),
        );
        let settings = cx.settings.clone();
        let sockets = crate::ws::Sockets::default();
        let ws = web::Data::new(crate::ws::WsShared {
            settings: settings.ws.clone(),
            rooms: cx.rooms.clone(),
            online: cx.online.clone(),
            sessions: cx.sessions.clone(),
            connections: cx.connections.clone(),
            metrics: crate::ws::WsMetrics::new(&registry)?,
            shutdown: shutdown.clone(),
            application,
            verifier: crate::auth::Verifier::from_settings(&settings.auth, &settings.tls)?,
            sockets: sockets.clone(),
        });
        let state = web::Data::new(AppState::new(tree, registry, arbiters)?);
        let watch_state = state.clone();
        let watch = TaskSpec::every(
            "health-watch",
            Duration::from_millis(settings.health.watch_interval_ms),
            move || {
                let state = watch_state.clone();
                async move {
                    state.not_ready(&state.tree.health().await);
                    Ok(())
                }
            },
        )
        .timeout(Duration::from_millis(settings.health.timeout_ms * 2));
        // A name clash here means a user task took the name; theirs wins.
        let _ = cx.scheduler.with_task(watch);

        let http_metrics = web::Data::new(http_metrics);
        let app_state = state.clone();
        let admin = web::Data::new(http::admin::Admin::new(
            &settings.admin,
            cx.scheduler.clone(),
        ));
        let app_settings = settings.clone();
        let app = move || {
            http::app(
                app_state.clone(),
                http_metrics.clone(),
                ws.clone(),
                admin.clone(),
                &routes,
                &app_settings.server,
            )
        };
        let server = front::serve(listener, &settings, app).map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let http = server.handle();
        actix_rt::spawn(server);
        warm_up(&cx).await;
        // Start-up is done once every actor has answered a health request.
        state.tree.health().await;
        state.set_ready();
        info!(addr = %addr, version = env!("CARGO_PKG_VERSION"), "listening; ready");
        Ok(Server {
            addr,
            context: cx,
            state,
            room_arbiters,
            http,
            sockets,
            control,
            services,
            http_timeout: Duration::from_millis(settings.shutdown.http_timeout_ms),
        })
    }
}

/// The database's start-up probes (bounded by its retries), then what must
/// be in memory before clients come: sessions and room offsets.
async fn warm_up(cx: &AppContext) {
    cx.db.started().await;
    if !cx.db.is_up() {
        return;
    }
    match cx.sessions.warm().await {
        Ok(n) => info!(sessions = n, "sessions loaded"),
        Err(e) => {
            tracing::warn!(error = %e, "sessions not loaded; they load when the database answers")
        }
    }
    match holdfast_actors::sessions::load_room_checkpoint(&cx.db).await {
        Ok(rows) => {
            let n = cx.rooms.restore(
                rows.into_iter()
                    .map(|r| (r.name, r.epoch, u64::try_from(r.last_offset).unwrap_or(0))),
                Duration::from_millis(cx.settings.session.ttl_ms),
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
