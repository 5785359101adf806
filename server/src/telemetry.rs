//! Trace export: the spans of [`TARGET`] as OpenTelemetry spans over
//! OTLP/HTTP (`[telemetry] otlp_endpoint`, the `otlp` cargo feature).
//!
//! What is traced, parent first:
//!
//! - `http.request`: every HTTP request (the middleware in
//!   `http::observe`), the child of the caller's span when the request
//!   carries a W3C `traceparent`;
//! - `ws.session`: one WebSocket connection, the child of its upgrade
//!   request, from the upgrade to the close;
//! - `ws.publish`: a client's `publish`, the child of its session;
//! - `room.publish`: the room hub's handling of a publish (the client's, or
//!   the server API's, whose parent is then the `http.request`), up to the
//!   offset the broker gave it;
//! - `room.deliver`: the hub handing it to this node's members;
//! - `ws.fanout`: a transport worker writing it to its connections.
//!
//! The spans are `tracing` spans of target [`TARGET`], at `INFO`; the log
//! never shows them, and without an exporter they are disabled (a span
//! that nothing records costs one check of its call site).

use tracing::Span;

pub use holdfast_actors::trace::TARGET;

/// Makes `span` the child of the remote span of a W3C `traceparent` (and
/// `tracestate`) in `headers`, if there is a valid one. Without the `otlp`
/// feature the headers are ignored.
pub fn adopt_remote_parent(span: &Span, headers: &actix_web::http::header::HeaderMap) {
    #[cfg(feature = "otlp")]
    otlp::adopt_remote_parent(span, headers);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, headers);
}

/// Gives `span` the name it is exported with (an HTTP request's is only
/// known once its route matched). A no-op without the `otlp` feature.
pub fn rename(span: &Span, name: String) {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.context().span().update_name(name);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, name);
}

#[cfg(feature = "otlp")]
pub use otlp::Traces;

/// Without the `otlp` feature nothing is exported; config validation
/// refuses `telemetry.otlp_endpoint`.
#[cfg(not(feature = "otlp"))]
pub struct Traces;

#[cfg(not(feature = "otlp"))]
impl Traces {
    /// Always `None`.
    ///
    /// # Errors
    /// Never.
    pub fn start(_settings: &crate::config::Settings) -> Result<Option<Self>, String> {
        Ok(None)
    }

    /// Never called: there is never a `Traces`.
    pub fn layer<S>(&self) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        Box::new(tracing_subscriber::layer::Identity::new())
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::time::Duration;

    use actix_web::http::header::HeaderMap;
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use opentelemetry_sdk::Resource;
    use tracing::{Span, Subscriber};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use crate::config::Settings;

    /// How long one export may take (the collector's answer included).
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long the exit waits for the last spans to go out.
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

    /// The exporter: a batch of spans is posted from a thread of its own
    /// every few seconds (`OTEL_BSP_SCHEDULE_DELAY`, 5000 ms), or when 512
    /// wait; at most 2048 wait (`OTEL_BSP_MAX_QUEUE_SIZE`), more are dropped
    /// rather than held. Dropping it posts what is left.
    pub struct Traces {
        provider: SdkTracerProvider,
    }

    impl Traces {
        /// Starts the exporter when `settings.telemetry` names a collector
        /// (over `settings.tls` for `https://`). Call it outside any async
        /// runtime: its HTTP client is a blocking one.
        ///
        /// # Errors
        /// The exporter cannot be built (`tls.ca_file`, its HTTP client).
        pub fn start(settings: &Settings) -> Result<Option<Self>, String> {
            let telemetry = &settings.telemetry;
            if !telemetry.enabled() {
                return Ok(None);
            }
            let tls = settings.tls.client().map_err(|e| e.to_string())?;
            let client = tls
                .blocking_http_client()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("the trace exporter's HTTP client: {e}"))?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(telemetry.traces_url())
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("the trace exporter: {e}"))?;
            let resource = Resource::builder()
                .with_service_name(telemetry.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    telemetry.sample_ratio,
                ))))
                .with_resource(resource)
                .build();
            Ok(Some(Self { provider }))
        }

        /// The `tracing` layer that turns the spans of [`super::TARGET`]
        /// into OpenTelemetry spans (and nothing else).
        pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
        where
            S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
        {
            let tracer = self.provider.tracer("holdfast");
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(Targets::new().with_target(super::TARGET, tracing::Level::INFO))
                .boxed()
        }
    }

    impl Drop for Traces {
        fn drop(&mut self) {
            if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %e, "the last spans could not be exported");
            }
        }
    }

    /// Reads `traceparent`/`tracestate` from actix's header map.
    struct Headers<'a>(&'a HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            // One value only: a second `traceparent` makes the header
            // ambiguous, and an ambiguous parent is no parent.
            let mut values = self.0.get_all(key);
            let first = values.next()?;
            match values.next() {
                None => first.to_str().ok(),
                Some(_) => None,
            }
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    pub(super) fn adopt_remote_parent(span: &Span, headers: &HeaderMap) {
        if span.is_disabled() {
            return;
        }
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        if cx.span().span_context().is_valid() {
            // Fails only for a span that is not recorded: nothing to adopt.
            let _ = span.set_parent(cx);
        }
    }
}
