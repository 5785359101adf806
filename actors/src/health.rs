//! Health: what an actor says about itself, what its supervisor adds, and how
//! the whole tree folds into one status.
//!
//! Every supervised actor answers a health request within a deadline (config
//! `health.timeout_ms`, default 1 s). No answer counts as [`Status::Unhealthy`].
//! The rules for folding the checks into one status are the ones in the HTTP
//! section of PROTOCOL.md, and live in exactly one function, [`aggregate`].

use std::pin::Pin;

use actix::{Actor, ActorFuture};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How an actor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working as intended.
    Healthy,
    /// Working, but with reduced capacity or a dependency problem.
    Degraded,
    /// Not working, not answering, or restarting.
    Unhealthy,
}

impl Status {
    /// The lowercase wire name (`healthy`, `degraded`, `unhealthy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// All statuses, in order of severity.
    pub const ALL: [Status; 3] = [Status::Healthy, Status::Degraded, Status::Unhealthy];
}

/// What an actor reports about itself: a status and free-form details.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// The actor's own verdict.
    pub status: Status,
    /// Numbers and facts an operator wants to see next to the status.
    pub details: Map<String, Value>,
}

impl Health {
    /// A healthy report with no details.
    pub fn healthy() -> Self {
        Self {
            status: Status::Healthy,
            details: Map::new(),
        }
    }

    /// A degraded report carrying `reason` in `details.reason`.
    pub fn degraded(reason: impl Into<String>) -> Self {
        Self::healthy()
            .with_status(Status::Degraded)
            .with("reason", reason.into())
    }

    /// An unhealthy report carrying `reason` in `details.reason`.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Self::healthy()
            .with_status(Status::Unhealthy)
            .with("reason", reason.into())
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Adds one detail.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// An actor's answer to a health request: either at once, or a future that
/// runs inside the actor (for checks that need I/O, such as a database ping).
pub enum HealthReply<A: Actor> {
    /// The answer, computed synchronously.
    Ready(Health),
    /// The answer, once this future completes; the supervisor's deadline still applies.
    Pending(Pin<Box<dyn ActorFuture<A, Output = Health>>>),
}

impl<A: Actor> From<Health> for HealthReply<A> {
    fn from(health: Health) -> Self {
        HealthReply::Ready(health)
    }
}

/// The last abnormal exit of a supervised actor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// Why it failed: the panic message, or the error it stopped with.
    pub reason: String,
    /// When, as RFC 3339 UTC.
    pub at: String,
}

/// One actor's check as `/health` shows it: the actor's own report plus what
/// its supervisor knows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// The actor's name, unique in the tree.
    #[serde(skip)]
    pub name: String,
    /// Status after the supervisor's view (a restarting actor is unhealthy).
    pub status: Status,
    /// Whether this actor being unhealthy makes the whole node unhealthy.
    pub critical: bool,
    /// The supervisor that owns this actor.
    pub supervisor: String,
    /// How many times it was restarted since the process started.
    pub restarts: u64,
    /// Its last abnormal exit, if any.
    pub last_failure: Option<Failure>,
    /// Seconds since the current incarnation started (0 while down).
    pub uptime_s: f64,
    /// How long the actor took to answer the health request.
    pub latency_ms: f64,
    /// Whatever the actor reported.
    pub details: Map<String, Value>,
}

/// Folds checks into one status, exactly as PROTOCOL.md says: `unhealthy` when
/// a critical actor is unhealthy; `degraded` when a non-critical actor is
/// unhealthy or a critical one is degraded; otherwise `healthy`.
pub fn aggregate<'a>(checks: impl IntoIterator<Item = &'a Check>) -> Status {
    let mut status = Status::Healthy;
    for check in checks {
        let effect = match (check.critical, check.status) {
            (true, Status::Unhealthy) => return Status::Unhealthy,
            (true, Status::Degraded) | (false, Status::Unhealthy) => Status::Degraded,
            _ => Status::Healthy,
        };
        status = status.max(effect);
    }
    status
}

/// Whether the checks allow the node to take traffic: no critical actor is
/// unhealthy. (A degraded critical actor is up, so the node stays ready.)
pub fn ready<'a>(checks: impl IntoIterator<Item = &'a Check>) -> bool {
    checks
        .into_iter()
        .all(|c| !(c.critical && c.status == Status::Unhealthy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(critical: bool, status: Status) -> Check {
        Check {
            name: "x".into(),
            status,
            critical,
            supervisor: "root".into(),
            restarts: 0,
            last_failure: None,
            uptime_s: 0.0,
            latency_ms: 0.0,
            details: Map::new(),
        }
    }

    #[test]
    fn all_healthy_is_healthy() {
        let checks = [check(true, Status::Healthy), check(false, Status::Healthy)];
        assert_eq!(aggregate(&checks), Status::Healthy);
        assert_eq!(aggregate(&[]), Status::Healthy);
    }

    #[test]
    fn non_critical_unhealthy_degrades() {
        let checks = [
            check(true, Status::Healthy),
            check(false, Status::Unhealthy),
        ];
        assert_eq!(aggregate(&checks), Status::Degraded);
        assert!(ready(&checks));
    }

    #[test]
    fn critical_degraded_degrades_but_stays_ready() {
        let checks = [check(true, Status::Degraded), check(false, Status::Healthy)];
        assert_eq!(aggregate(&checks), Status::Degraded);
        assert!(ready(&checks));
    }

    #[test]
    fn non_critical_degraded_stays_healthy() {
        let checks = [check(true, Status::Healthy), check(false, Status::Degraded)];
        assert_eq!(aggregate(&checks), Status::Healthy);
    }

    #[test]
    fn critical_unhealthy_is_unhealthy_and_not_ready() {
        let checks = [
            check(false, Status::Unhealthy),
            check(true, Status::Unhealthy),
            check(true, Status::Degraded),
        ];
        assert_eq!(aggregate(&checks), Status::Unhealthy);
        assert!(!ready(&checks));
    }
}
