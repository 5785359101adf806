//! `GET /api/v1/trending/statistics` and `GET /api/v1/trending`: the
//! `trending` service's figures and cached documents, read from its handle
//! (so they answer while the actor restarts).

use actix_web::{web, HttpResponse};

use holdfast_actors::services::trending::Trending;

/// Registers the trending routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/trending/statistics").route(web::get().to(statistics)))
        .service(web::resource("/api/v1/trending").route(web::get().to(snapshot)));
}

/// `GET /api/v1/trending/statistics`: requests, fetches, failures, success
/// rate, last fetch and error, cache hits and misses, each feed's breaker.
pub async fn statistics(trending: web::Data<Trending>) -> HttpResponse {
    HttpResponse::Ok().json(trending.statistics())
}

/// `GET /api/v1/trending`: every feed's cached document, its age and
/// whether it is stale (a stale one is refreshed in the background).
pub async fn snapshot(trending: web::Data<Trending>) -> HttpResponse {
    HttpResponse::Ok().json(trending.snapshot())
}
