//! `GET /metrics`: Prometheus text format, from the process's own registry.

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, TextEncoder};

use super::AppState;

/// Refreshes the health gauges with a sweep, then encodes every metric.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Records holdfast_actor_health, and holdfast_ready from it.
    state.not_ready(&state.tree.health().await);
    let families = state.registry.gather();
    let mut body = Vec::with_capacity(16 * 1024);
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&families, &mut body) {
        tracing::error!(error = %e, "cannot encode metrics");
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type(encoder.format_type())
        .body(body)
}
