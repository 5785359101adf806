//! The trending service's metrics, all `holdfast_trending_*`, labelled by feed.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::BreakerState;

/// The metrics, all `holdfast_trending_*`, labelled by feed.
pub(super) struct TrendingMetrics {
    pub(super) requests: IntCounterVec,
    pub(super) failures: IntCounterVec,
    pub(super) successes: IntCounterVec,
    pub(super) failed_fetches: IntCounterVec,
    pub(super) retries: IntCounterVec,
    pub(super) rejected: IntCounterVec,
    pub(super) hits: IntCounterVec,
    pub(super) misses: IntCounterVec,
    pub(super) success_ratio: Gauge,
    pub(super) last_fetch: GaugeVec,
    pub(super) breaker: IntGaugeVec,
    pub(super) duration: HistogramVec,
}

impl TrendingMetrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Self> {
        fn counter(
            registry: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let success_ratio = Gauge::new(
            "holdfast_trending_success_ratio",
            "Successful requests over all requests to trending feeds (0 before the first).",
        )?;
        registry.register(Box::new(success_ratio.clone()))?;
        let last_fetch = GaugeVec::new(
            Opts::new(
                "holdfast_trending_last_fetch_timestamp_seconds",
                "Unix time of the feed's last successful fetch.",
            ),
            &["feed"],
        )?;
        registry.register(Box::new(last_fetch.clone()))?;
        let breaker = IntGaugeVec::new(
            Opts::new(
                "holdfast_trending_breaker_state",
                "1 for the state the feed's circuit breaker is in (closed, open, half_open).",
            ),
            &["feed", "state"],
        )?;
        registry.register(Box::new(breaker.clone()))?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "holdfast_trending_request_duration_seconds",
                "Duration of requests to trending feeds, failures included.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["feed"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            requests: counter(
                registry,
                "holdfast_trending_requests_total",
                "Requests sent to trending feeds, retries included.",
                &["feed"],
            )?,
            failures: counter(
                registry,
                "holdfast_trending_request_failures_total",
                "Failed requests to trending feeds, by reason.",
                &["feed", "reason"],
            )?,
            successes: counter(
                registry,
                "holdfast_trending_successful_fetches_total",
                "Fetches that got a JSON document.",
                &["feed"],
            )?,
            failed_fetches: counter(
                registry,
                "holdfast_trending_failed_fetches_total",
                "Fetches that gave up without a document.",
                &["feed"],
            )?,
            retries: counter(
                registry,
                "holdfast_trending_retries_total",
                "Requests retried after a back-off.",
                &["feed"],
            )?,
            rejected: counter(
                registry,
                "holdfast_trending_breaker_rejections_total",
                "Refreshes an open circuit breaker refused.",
                &["feed"],
            )?,
            hits: counter(
                registry,
                "holdfast_trending_cache_hits_total",
                "Reads answered by a fresh cached document.",
                &["feed"],
            )?,
            misses: counter(
                registry,
                "holdfast_trending_cache_misses_total",
                "Reads that found no fresh cached document.",
                &["feed"],
            )?,
            success_ratio,
            last_fetch,
            breaker,
            duration,
        })
    }

    pub(super) fn set_breaker(&self, feed: &str, state: BreakerState) {
        for s in BreakerState::ALL {
            self.breaker
                .with_label_values(&[feed, s.as_str()])
                .set(i64::from(s == state));
        }
    }
}
