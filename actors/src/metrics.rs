//! Prometheus metrics owned by the kernel: restarts, failures, escalations,
//! health by actor, shutdown duration, scheduler runs, events.
//!
//! Every process (and every test server) has its own [`prometheus::Registry`],
//! never the global one, so that several servers can run in one test binary.
//! Names follow Prometheus conventions: a `holdfast_` prefix, base units
//! (seconds, bytes), `_total` on counters, explicit histogram buckets.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::health::{Check, Status};

/// Buckets for shutdown durations, in seconds.
const SHUTDOWN_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets for scheduled task durations, in seconds.
const TASK_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

/// The kernel's metrics. Cheap to share behind an `Arc`.
pub struct KernelMetrics {
    /// The registry every metric here (and every subsystem's) is registered in.
    pub registry: Registry,
    /// `holdfast_actor_restarts_total{actor}`
    pub actor_restarts: IntCounterVec,
    /// `holdfast_actor_failures_total{actor}`: panics and failure exits.
    pub actor_failures: IntCounterVec,
    /// `holdfast_supervisor_escalations_total{supervisor}`
    pub escalations: IntCounterVec,
    /// `holdfast_actor_health{actor,status}`: 1 for the actor's current status, 0 for the others.
    pub actor_health: IntGaugeVec,
    /// `holdfast_shutdown_duration_seconds`
    pub shutdown_duration: Histogram,
    /// `holdfast_scheduler_task_runs_total{task,outcome}`
    pub task_runs: IntCounterVec,
    /// `holdfast_scheduler_task_duration_seconds{task}`
    pub task_duration: HistogramVec,
    /// `holdfast_events_published_total{kind}`
    pub events_published: IntCounterVec,
    /// `holdfast_events_dropped_total{reason}`: subscribers too slow, or the bus down and its buffer full.
    pub events_dropped: IntCounterVec,
}

impl KernelMetrics {
    /// Registers the kernel's metrics in `registry`.
    ///
    /// # Errors
    /// When a metric of the same name is already registered there.
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let actor_restarts = counter(
            "holdfast_actor_restarts_total",
            "Restarts of a supervised actor.",
            &["actor"],
        )?;
        let actor_failures = counter(
            "holdfast_actor_failures_total",
            "Abnormal exits (panics, failure reasons) of a supervised actor.",
            &["actor"],
        )?;
        let escalations = counter(
            "holdfast_supervisor_escalations_total",
            "Times a supervisor exceeded its restart intensity and escalated.",
            &["supervisor"],
        )?;
        let task_runs = counter(
            "holdfast_scheduler_task_runs_total",
            "Scheduled task runs by outcome (ok, error, panic, timeout, skipped).",
            &["task", "outcome"],
        )?;
        let events_published = counter(
            "holdfast_events_published_total",
            "EventsActor published on the internal bus.",
            &["kind"],
        )?;
        let events_dropped = counter(
            "holdfast_events_dropped_total",
            "EventsActor not delivered: a subscriber's queue was full, or the bus was down with its buffer full.",
            &["reason"],
        )?;
        let actor_health = IntGaugeVec::new(
            Opts::new(
                "holdfast_actor_health",
                "1 for the actor's current health status, 0 for the others.",
            ),
            &["actor", "status"],
        )?;
        registry.register(Box::new(actor_health.clone()))?;
        let shutdown_duration = Histogram::with_opts(
            HistogramOpts::new(
                "holdfast_shutdown_duration_seconds",
                "Duration of the staged shutdown.",
            )
            .buckets(SHUTDOWN_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(shutdown_duration.clone()))?;
        let task_duration = HistogramVec::new(
            HistogramOpts::new(
                "holdfast_scheduler_task_duration_seconds",
                "Duration of scheduled task runs.",
            )
            .buckets(TASK_BUCKETS.to_vec()),
            &["task"],
        )?;
        registry.register(Box::new(task_duration.clone()))?;
        Ok(Self {
            registry,
            actor_restarts,
            actor_failures,
            escalations,
            actor_health,
            shutdown_duration,
            task_runs,
            task_duration,
            events_published,
            events_dropped,
        })
    }

    /// Sets the health gauges from a fresh set of checks.
    pub fn record_health(&self, checks: &[Check]) {
        for check in checks {
            for status in Status::ALL {
                let value = i64::from(check.status == status);
                self.actor_health
                    .with_label_values(&[&check.name, status.as_str()])
                    .set(value);
            }
        }
    }
}
