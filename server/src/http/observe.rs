//! Per-request observability: a request id (the client's `X-Request-Id` when
//! it is sane, a new one otherwise) echoed on the response, one log line per
//! request (method, path, status, latency, request id), the HTTP metrics,
//! and the request's `http.request` span (see [`crate::telemetry`]).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing::field::Empty;
use tracing::Instrument;

use crate::telemetry;

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is echoed rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Buckets for HTTP request durations, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTP metrics.
#[derive(Clone)]
pub struct HttpMetrics {
    /// `holdfast_http_requests_total{method,route,status}`
    requests: IntCounterVec,
    /// `holdfast_http_request_duration_seconds{method,route}`
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers the HTTP metrics in `registry`.
    ///
    /// # Errors
    /// When they are registered there already.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "holdfast_http_requests_total",
                "HTTP requests served, by route pattern and status.",
            ),
            &["method", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "holdfast_http_request_duration_seconds",
                "HTTP request latency, by route pattern.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// Whether a client-supplied request id may be echoed (and logged) as is.
fn sane_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The middleware function (`actix_web::middleware::from_fn(observe)`).
///
/// # Errors
/// Passes on the inner service's error.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "http.request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        url.path = %path,
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %id,
    );
    telemetry::adopt_remote_parent(&span, req.headers());
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let took = started.elapsed();
    if !span.is_disabled() {
        telemetry::rename(&span, format!("{method} {route}"));
        span.record("http.route", route.as_str());
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    if let Some(m) = metrics {
        m.requests
            .with_label_values(&[&method, &route, &status.to_string()])
            .inc();
        m.duration
            .with_label_values(&[&method, &route])
            .observe(took.as_secs_f64());
    }
    tracing::info!(
        method = %method,
        path = %path,
        status,
        latency_ms = took.as_secs_f64() * 1e3,
        request_id = %id,
        "request"
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::sane_request_id;

    #[test]
    fn only_plain_request_ids_are_echoed() {
        assert!(sane_request_id("abc-123_x.y:z"));
        assert!(!sane_request_id(""));
        assert!(!sane_request_id("line\nbreak"));
        assert!(!sane_request_id(&"a".repeat(129)));
    }
}
