//! Crash loops that a supervisor gives up on, through the public API: a
//! factory that always panics past the intensity, and failures in a row
//! without a healthy run however far apart the back-off spaces them.

mod common;

use std::time::Duration;

use common::*;
use holdfast_actors::shutdown::{ControlEvent, ShutdownReason};
use holdfast_actors::supervision::{Backoff, Intensity, SupervisorSpec};
use holdfast_actors::Tree;

/// A factory that always panics is a crash loop: it exhausts the intensity
/// and the root escalates.
#[actix_rt::test]
async fn a_factory_that_always_panics_exhausts_the_intensity_and_escalates() {
    let (kernel, mut control) = kernel();
    let probe = Probe::new();
    probe
        .factory_panics
        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    let spec = SupervisorSpec::new("root")
        .intensity(Intensity {
            max_restarts: 3,
            window: Duration::from_secs(5),
            max_consecutive: 10,
        })
        .child(worker("doomed", &probe));
    let _tree = Tree::start(&kernel, spec).unwrap();

    let event = tokio::time::timeout(DEADLINE, control.recv())
        .await
        .expect("a control event arrives");
    let Some(ControlEvent::Shutdown(ShutdownReason::Escalation { reason, .. })) = event else {
        panic!("expected an escalation, got {event:?}");
    };
    assert!(
        reason.contains("factory panicked: boom in doomed factory"),
        "reason: {reason}"
    );
    assert_eq!(probe.starts(), 0);
}

/// A leaf that can never start escalates with the default rule even when
/// its back-off keeps its restarts under the intensity (issue 12 #14): more
/// than `max_consecutive` failures in a row without a healthy run (10 by
/// default) is a crash loop, whatever the spacing.
#[actix_rt::test]
async fn consecutive_failures_without_a_healthy_run_escalate_whatever_the_backoff() {
    let (kernel, mut control) = kernel();
    let probe = Probe::new();
    probe
        .factory_panics
        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    let spec = SupervisorSpec::new("root")
        .intensity(Intensity {
            // At most two restarts per 20 ms: the first restart is at once,
            // the next ones 25 ms apart, so the back-off stays under it.
            max_restarts: 2,
            window: Duration::from_millis(20),
            ..Intensity::default()
        })
        .child(worker("never", &probe).backoff(Backoff {
            min: Duration::from_millis(25),
            max: Duration::from_millis(25),
            jitter: 0.0,
            reset_after: Duration::from_secs(30),
        }));
    let _tree = Tree::start(&kernel, spec).unwrap();
    let event = tokio::time::timeout(DEADLINE, control.recv())
        .await
        .expect("a control event arrives");
    let Some(ControlEvent::Shutdown(ShutdownReason::Escalation { reason, .. })) = event else {
        panic!("expected an escalation, got {event:?}");
    };
    assert!(reason.contains("in a row"), "reason: {reason}");
}
