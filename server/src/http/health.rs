//! `/health`, `/health/{name}`, `/health/live` (`/livez`), `/health/ready`
//! (`/readyz`), exactly as in the HTTP section of PROTOCOL.md.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use holdfast_actors::health::Status;

use super::error::ApiError;
use super::AppState;

/// `200` unless `unhealthy` (`503`).
fn status_code(status: Status) -> StatusCode {
    match status {
        Status::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

/// `GET /health`: the whole tree, plus version, uptime and process figures.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let tree = state.tree.health().await;
    let checks: Map<String, Value> = tree
        .checks
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                serde_json::to_value(c).unwrap_or(Value::Null),
            )
        })
        .collect();
    let body = json!({
        "status": tree.status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started_at.elapsed().as_secs_f64(),
        "ready": tree.ready && state.is_ready(),
        "draining": state.tree.kernel().shutdown.is_draining(),
        "process": process_figures(state.started_at.elapsed()),
        "checks": checks,
    });
    HttpResponse::build(status_code(tree.status)).json(body)
}

/// `GET /health/{name}`: one actor's check.
///
/// # Errors
/// 404 when no actor has that name.
pub async fn check(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tree = state.tree.health().await;
    let name = name.into_inner();
    let check = tree
        .checks
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no actor named '{name}'")))?;
    let mut body = serde_json::to_value(&check).unwrap_or(Value::Null);
    body["name"] = Value::String(name);
    Ok(HttpResponse::build(status_code(check.status)).json(body))
}

/// `GET /health/live`: 200 while the event loops answer. Checks no dependency.
pub async fn live(state: web::Data<AppState>) -> HttpResponse {
    let stalled = stalled_loops(&state).await;
    if stalled.is_empty() {
        HttpResponse::Ok().json(json!({"status": "live"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"status": "stalled", "stalled": stalled}))
    }
}

/// The event loops that did not run a probe task within the health
/// timeout: liveness, as `/health/live` and the systemd watchdog see it.
pub async fn stalled_loops(state: &AppState) -> Vec<String> {
    let timeout = state.tree.kernel().health_timeout;
    let probes = state.arbiters.iter().map(|(name, arbiter)| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = arbiter.spawn(async move {
            let _ = tx.send(());
        });
        async move {
            let answered = sent
                && tokio::time::timeout(timeout, rx)
                    .await
                    .is_ok_and(|r| r.is_ok());
            (name.clone(), answered)
        }
    });
    let results = futures::future::join_all(probes).await;
    results
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect()
}

/// `GET /health/ready`: 200 once start-up is done and no critical actor is
/// unhealthy; 503 while starting, draining, or with a critical actor down.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let reason = match state.not_ready_now() {
        Some(reason) => Some(reason),
        None => state.not_ready(&state.tree.health().await),
    };
    match reason {
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "reason": reason})),
        None => HttpResponse::Ok().json(json!({"status": "ready"})),
    }
}

/// Process memory and CPU, as the seed servers showed operators.
fn process_figures(uptime: Duration) -> Value {
    match procfs::process::Process::myself().and_then(|p| p.stat()) {
        Ok(stat) => {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu_s = (stat.utime + stat.stime) as f64 / ticks;
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1) as f64;
            let rss_bytes = stat.rss.saturating_mul(procfs::page_size());
            json!({
                "pid": std::process::id(),
                "rss_bytes": rss_bytes,
                "cpu_seconds": cpu_s,
                // Average since start, as a share of all cores.
                "cpu_percent": 100.0 * cpu_s / uptime.as_secs_f64().max(1e-3) / cores,
                "threads": stat.num_threads,
            })
        }
        Err(_) => json!({"pid": std::process::id()}),
    }
}
