//! The admin API under `/admin`: the live tree, operator restarts, the task
//! list, recent events, a shutdown request, and (chaos drills only) crashes.
//!
//! Off unless `admin.token` is set: without a token the scope is not even
//! registered, so `/admin/...` answers the same JSON 404 as any unknown
//! route. With a token, every request under `/admin` must carry
//! `Authorization: Bearer <token>`; the token is compared in constant time
//! (only its length can be told from timing) and a missing or wrong one gets
//! a JSON 401 before any route is looked up, so an unauthenticated caller
//! learns nothing about which routes exist. The token never appears in a
//! log line or an error message.
//!
//! | route | answers |
//! |---|---|
//! | `GET /admin/actors` | `{status, chaos, actors}`: every actor: name, supervisor, status, critical, restarts, uptime_s, last_failure |
//! | `POST /admin/actors/{name}/restart` | graceful stop and restart through its supervisor; 404 for an unknown name, 409 for a supervisor-less or stopping actor |
//! | `GET /admin/tasks` | the scheduler's tasks with their last run |
//! | `GET /admin/events?n=100` | the `n` most recent events, oldest first |
//! | `POST /admin/shutdown` | 202; the staged shutdown, exactly as SIGTERM |
//! | `POST /admin/actors/{name}/crash` | only with `admin.chaos = true`: 202; the actor panics inside its own context |

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use holdfast_actors::events::Envelope;
use holdfast_actors::scheduler::Scheduler;
use holdfast_actors::shutdown::ShutdownReason;

use super::error::ApiError;
use super::AppState;
use crate::config::{AdminSettings, Secret};

/// Events `GET /admin/events` answers when `n` is not given.
pub const DEFAULT_EVENTS: usize = 100;

/// What the admin handlers need beyond [`AppState`].
pub struct Admin {
    /// The bearer token; empty turns the API off.
    token: Secret,
    /// Whether the crash route exists.
    chaos: bool,
    /// For `GET /admin/tasks`.
    scheduler: Scheduler,
}

impl Admin {
    /// The admin API as configured.
    pub fn new(settings: &AdminSettings, scheduler: Scheduler) -> Self {
        Self {
            token: settings.token.clone(),
            chaos: settings.chaos,
            scheduler,
        }
    }

    /// Whether the API is on (a token is configured).
    pub fn enabled(&self) -> bool {
        !self.token.is_empty()
    }

    /// Whether `header` is `Bearer <the token>` (see [`bearer`](super::bearer)).
    #[cfg(test)]
    fn authorized(&self, header: Option<&str>) -> bool {
        super::bearer::allows(&self.token, header)
    }
}

impl super::bearer::Guard for Admin {
    const SCOPE: &'static str = "admin";
    const MISSING: &'static str = "the admin API needs 'Authorization: Bearer <admin token>'";
    const WRONG: &'static str = "the admin token is wrong";

    fn secret(&self) -> &Secret {
        &self.token
    }
}

/// Registers the console's page (public, static: it asks for the token)
/// and, when the API is on, the `/admin` scope; without a token every other
/// `/admin/...` path is a plain 404.
pub fn routes(cfg: &mut web::ServiceConfig, admin: &Admin) {
    // Before the scope, which would otherwise ask the page for a token.
    cfg.configure(super::assets::console_routes);
    if !admin.enabled() {
        return;
    }
    let mut scope = web::scope("/admin")
        .service(web::resource("/actors").route(web::get().to(actors)))
        .service(web::resource("/actors/{name}/restart").route(web::post().to(restart)))
        .service(web::resource("/tasks").route(web::get().to(tasks)))
        .service(web::resource("/events").route(web::get().to(events)))
        .service(web::resource("/shutdown").route(web::post().to(shutdown)));
    if admin.chaos {
        scope = scope.service(web::resource("/actors/{name}/crash").route(web::post().to(crash)));
    }
    cfg.service(scope.wrap(from_fn(super::bearer::authorize::<Admin>)));
}

/// `GET /admin/actors`: the live tree, in tree order.
async fn actors(state: web::Data<AppState>, admin: web::Data<Admin>) -> HttpResponse {
    let tree = state.tree.health().await;
    let actors: Vec<_> = tree
        .checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "supervisor": c.supervisor,
                "status": c.status,
                "critical": c.critical,
                "restarts": c.restarts,
                "uptime_s": c.uptime_s,
                "last_failure": c.last_failure,
            })
        })
        .collect();
    HttpResponse::Ok()
        .json(json!({ "status": tree.status, "chaos": admin.chaos, "actors": actors }))
}

/// `POST /admin/actors/{name}/restart`: answers once the new incarnation runs.
///
/// # Errors
/// 404 for an unknown name, 409 for the root or a stopping actor, 503
/// during shutdown or while its supervisor is down.
async fn restart(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    info!(actor = %name, "restart requested through the admin API");
    let restarted = state.tree.restart(&name).await?;
    Ok(HttpResponse::Ok().json(restarted))
}

/// `POST /admin/actors/{name}/crash` (chaos only): 202 once the actor has
/// been told to panic; its supervisor takes it from there.
///
/// # Errors
/// 404 for an unknown name, 409 for a supervisor or an actor not running.
async fn crash(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    warn!(actor = %name, "crash requested through the admin API (chaos)");
    state
        .tree
        .crash(&name, "crashed on purpose through the admin API (chaos)")
        .await?;
    Ok(HttpResponse::Accepted().json(json!({ "actor": name, "status": "crash_requested" })))
}

/// `GET /admin/tasks`: read from the scheduler's shared table, so it answers
/// even while the scheduler restarts.
async fn tasks(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "tasks": admin.scheduler.list() }))
}

/// The query of `GET /admin/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// How many of the most recent events.
    n: Option<usize>,
}

/// `GET /admin/events?n=`: the most recent events, oldest first.
///
/// # Errors
/// 400 for a query that is not `n=<count>`.
async fn events(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query: EventsQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}; expected n=<count>")))?;
    let events = state
        .tree
        .kernel()
        .events
        .recent(query.n.unwrap_or(DEFAULT_EVENTS));
    let events: Vec<&Envelope> = events.iter().map(|e| &**e).collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

/// `POST /admin/shutdown`: the same path as SIGTERM. Readiness is 503 from
/// this instant; the staged shutdown runs and is reported in the log.
async fn shutdown(state: web::Data<AppState>) -> HttpResponse {
    info!("shutdown requested through the admin API");
    state
        .tree
        .kernel()
        .shutdown
        .request(ShutdownReason::Requested { by: "admin".into() });
    HttpResponse::Accepted().json(json!({ "status": "shutting_down" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(token: &str) -> Admin {
        Admin {
            token: Secret::new(token),
            chaos: false,
            scheduler: Scheduler::new(),
        }
    }

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let a = admin("0123456789abcdef-token");
        assert!(a.authorized(Some("Bearer 0123456789abcdef-token")));
        assert!(a.authorized(Some("bearer 0123456789abcdef-token")));
        assert!(!a.authorized(Some("Bearer 0123456789abcdef-tokeN")));
        assert!(!a.authorized(Some("Bearer 0123456789abcdef-token-and-more")));
        assert!(!a.authorized(Some("Bearer 0123456789abcdef")));
        assert!(!a.authorized(Some("Basic 0123456789abcdef-token")));
        assert!(!a.authorized(Some("0123456789abcdef-token")));
        assert!(!a.authorized(Some("Bearer ")));
        assert!(!a.authorized(None));
    }

    #[test]
    fn no_token_configured_authorizes_nobody() {
        let a = admin("");
        assert!(!a.enabled());
        assert!(!a.authorized(Some("Bearer ")));
        assert!(!a.authorized(Some("Bearer x")));
    }
}
