//! The transport's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Buckets for publish-to-deliver latency, in seconds.
pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The transport's metrics.
#[derive(Clone)]
pub struct WsMetrics {
    pub(super) connections: IntGauge,
    pub(super) connects: IntCounter,
    pub(super) disconnects: IntCounterVec,
    pub(super) rejected: IntCounterVec,
    pub(super) frames_in: IntCounter,
    pub(super) frames_out: IntCounter,
    pub(super) bytes_in: IntCounter,
    pub(super) bytes_out: IntCounter,
    pub(super) rate_limited: IntCounter,
    pub(super) slow_consumers: IntCounter,
    pub(super) slow_consumer_drops: IntCounterVec,
    pub(super) queued_bytes: IntGauge,
    pub(super) queued_messages: IntGauge,
    pub(super) latency: Histogram,
}

impl WsMetrics {
    /// Registers the transport's metrics.
    ///
    /// # Errors
    /// When they are registered already.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            m: T,
        ) -> prometheus::Result<T> {
            r.register(Box::new(m.clone()))?;
            Ok(m)
        }
        let counter = |name: &str, help: &str| reg(registry, IntCounter::new(name, help)?);
        let gauge = |name: &str, help: &str| reg(registry, IntGauge::new(name, help)?);
        Ok(Self {
            connections: gauge("holdfast_ws_connections", "Open WebSocket connections.")?,
            connects: counter("holdfast_ws_connects_total", "WebSocket connections accepted.")?,
            disconnects: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("holdfast_ws_disconnects_total", "WebSocket connections closed, by close code (3xxx and 4xxx: the application ranges, one label each)."),
                    &["code"],
                )?,
            )?,
            rejected: reg(
                registry,
                IntCounterVec::new(
                    Opts::new("holdfast_ws_rejected_total", "Upgrades refused before the handshake, by reason."),
                    &["reason"],
                )?,
            )?,
            frames_in: counter("holdfast_ws_frames_in_total", "Frames received from clients.")?,
            frames_out: counter("holdfast_ws_frames_out_total", "Frames sent to clients.")?,
            bytes_in: counter("holdfast_ws_bytes_in_total", "Payload bytes received from clients.")?,
            bytes_out: counter("holdfast_ws_bytes_out_total", "Payload bytes sent to clients.")?,
            rate_limited: counter("holdfast_ws_rate_limited_total", "Frames dropped by the per-connection rate limit.")?,
            slow_consumers: counter(
                "holdfast_ws_slow_consumer_closes_total",
                "Connections closed with 1013 because their outbound queue overflowed.",
            )?,
            slow_consumer_drops: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "holdfast_ws_slow_consumer_dropped_total",
                        "Messages dropped from lagging members' outbound queues, by the namespace's slow_consumer policy.",
                    ),
                    &["policy"],
                )?,
            )?,
            queued_bytes: gauge("holdfast_ws_outbound_queue_bytes", "Bytes waiting in outbound queues, all connections.")?,
            queued_messages: gauge(
                "holdfast_ws_outbound_queue_messages",
                "Messages waiting in outbound queues, all connections.",
            )?,
            latency: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "holdfast_ws_publish_to_deliver_seconds",
                        "From a hub accepting a publish to the frame being queued for a member's socket.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )?,
            )?,
        })
    }
}
