//! The HTTP layer: routes, shared state, middleware order.
//!
//! Middleware, outermost first: `observe` (request id, log line, metrics),
//! JSON error bodies, CORS. So every response, errors included, carries the
//! request id and the CORS headers, and every error has a JSON body.

pub mod admin;
pub mod api;
pub mod assets;
pub mod bearer;
pub mod error;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod observe;
pub mod trending;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_cors::Cors;
use actix_rt::ArbiterHandle;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, ErrorHandlers};
use actix_web::{web, App, HttpRequest, HttpResponse};
use prometheus::{IntGauge, Registry};

use holdfast_actors::{Tree, TreeHealth};

use crate::config::ServerSettings;
use error::ApiError;
use observe::{HttpMetrics, REQUEST_ID};

/// What every handler can reach.
pub struct AppState {
    /// The running supervision tree.
    pub tree: Tree,
    /// The process's metrics registry.
    pub registry: Registry,
    /// When the server started, for `uptime_s`.
    pub started_at: Instant,
    /// Set once start-up is done; readiness is 503 before.
    ready: AtomicBool,
    /// The event loops liveness pings, by name.
    pub arbiters: Vec<(String, ArbiterHandle)>,
    /// `holdfast_ready`: 1 while `/health/ready` would answer 200.
    ready_gauge: IntGauge,
}

impl AppState {
    /// State for a tree that is still starting.
    ///
    /// # Errors
    /// `holdfast_ready` is registered already.
    pub fn new(
        tree: Tree,
        registry: Registry,
        arbiters: Vec<(String, ArbiterHandle)>,
    ) -> Result<Self, prometheus::Error> {
        let ready_gauge = IntGauge::new(
            "holdfast_ready",
            "1 while the node takes traffic (GET /health/ready answers 200), else 0.",
        )?;
        registry.register(Box::new(ready_gauge.clone()))?;
        Ok(Self {
            tree,
            registry,
            started_at: Instant::now(),
            ready: AtomicBool::new(false),
            arbiters,
            ready_gauge,
        })
    }

    /// Why the node takes no traffic before any actor is asked: it drains,
    /// or start-up is not done. Sets `holdfast_ready` to 0 when so.
    pub fn not_ready_now(&self) -> Option<String> {
        let reason = if self.tree.kernel().shutdown.is_draining() {
            Some("draining".to_owned())
        } else if !self.is_ready() {
            Some("starting".to_owned())
        } else {
            None
        };
        if reason.is_some() {
            self.ready_gauge.set(0);
        }
        reason
    }

    /// Why the node takes no traffic, `tree` being its health now: as
    /// [`AppState::not_ready_now`], or the critical actors that are
    /// unhealthy; `None` when it is ready. Sets `holdfast_ready` to match.
    pub fn not_ready(&self, tree: &TreeHealth) -> Option<String> {
        let reason = self.not_ready_now().or_else(|| {
            (!tree.ready).then(|| {
                let down: Vec<&str> = tree
                    .checks
                    .iter()
                    .filter(|c| {
                        c.critical && c.status == holdfast_actors::health::Status::Unhealthy
                    })
                    .map(|c| c.name.as_str())
                    .collect();
                format!("critical actor unhealthy: {}", down.join(", "))
            })
        });
        self.ready_gauge.set(i64::from(reason.is_none()));
        reason
    }

    /// Whether start-up is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks start-up as done.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
}

/// The routes of PROTOCOL.md's HTTP section.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // Resources (not `cfg.route`) so that a wrong method answers 405, not 404.
    let get = |path: &str, route: actix_web::Route| web::resource(path).route(route);
    cfg.service(get("/health", web::get().to(health::health)))
        .service(get("/health/live", web::get().to(health::live)))
        .service(get("/livez", web::get().to(health::live)))
        .service(get("/health/ready", web::get().to(health::ready)))
        .service(get("/readyz", web::get().to(health::ready)))
        .service(get("/health/{name}", web::get().to(health::check)))
        .service(get("/metrics", web::get().to(metrics::metrics)))
        .configure(assets::routes);
}

/// Answers any path no route matched.
async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// CORS from the configured origins (`*` allows any).
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers([REQUEST_ID.clone()])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for origin in origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// The application: state, limits, middleware and routes. Tests build it
/// with `actix_web::test::init_service` to call handlers without a socket.
pub fn app(
    state: web::Data<AppState>,
    http_metrics: web::Data<HttpMetrics>,
    ws: web::Data<crate::ws::WsShared>,
    admin: web::Data<admin::Admin>,
    mounted: &[crate::app::Routes],
    server: &ServerSettings,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(http_metrics)
        .app_data(ws)
        .service(web::resource("/ws").route(web::get().to(crate::ws::upgrade)))
        .app_data(web::PayloadConfig::new(server.max_body_bytes))
        .app_data(
            web::JsonConfig::default()
                .limit(server.max_body_bytes)
                .error_handler(|e, _| ApiError::BadRequest(format!("body: {e}")).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::BadRequest(format!("query: {e}")).into()),
        )
        .configure(routes)
        .configure(|cfg| admin::routes(cfg, &admin))
        .app_data(admin)
        .configure(|cfg| {
            for routes in mounted {
                routes(cfg);
            }
        })
        .default_service(web::to(not_found))
        .wrap(cors(&server.cors_origins))
        .wrap(ErrorHandlers::new().default_handler(error::json_errors))
        .wrap(from_fn(observe::observe))
}
