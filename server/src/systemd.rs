//! systemd `Type=notify` support, through the `sd-notify` crate.
//!
//! When systemd starts the server with `NOTIFY_SOCKET` set (any unit with
//! `Type=notify`), the server tells it:
//!
//! - `READY=1` once start-up is done: the listener is bound and every actor
//!   has answered a first health request (the moment readiness turns 200);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` (set by `WatchdogSec=`), sent
//!   from the main event loop and only while liveness holds (every event
//!   loop answers, the test of `/health/live`), so a wedged process is
//!   killed and restarted by systemd rather than pinged along by a thread
//!   that still runs;
//! - `STATUS=` with the open connection count, when it changes;
//! - `STOPPING=1` the moment a shutdown begins (signal, admin, escalation).
//!
//! Without `NOTIFY_SOCKET` nothing runs. A failed notification is logged
//! once and never stops the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{info, warn};

use holdfast_actors::shutdown::Shutdown;

use crate::app::Probe;

/// How often `STATUS=` is refreshed when no watchdog asks for more often.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the process runs under a service manager that listens.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Sends `states`; logs the first failure only, so a broken socket does not
/// flood the log.
fn notify(states: &[NotifyState<'_>], warned: &AtomicBool) {
    if let Err(e) = sd_notify::notify(states) {
        if !warned.swap(true, Ordering::Relaxed) {
            warn!(error = %e, "cannot notify systemd; carrying on without it");
        }
    }
}

/// The `STATUS=` text.
fn status_line(phase: &str, connections: usize) -> String {
    format!("{phase}; {connections} connections")
}

/// The time between two watchdog pings: half the watchdog period, as
/// systemd recommends, and at most [`STATUS_INTERVAL`].
fn tick(watchdog: Option<Duration>) -> Duration {
    watchdog
        .map(|w| (w / 2).max(Duration::from_millis(1)))
        .unwrap_or(STATUS_INTERVAL)
        .min(STATUS_INTERVAL)
}

/// Announces readiness and starts the watchdog and status loop on the
/// current (main) event loop. Call once start-up is done; does nothing
/// without `NOTIFY_SOCKET`.
pub fn start(probe: Probe, shutdown: Shutdown) {
    if !enabled() {
        return;
    }
    let warned = Arc::new(AtomicBool::new(false));
    let watchdog = sd_notify::watchdog_enabled();
    let first = status_line("ready", probe.connections());
    notify(&[NotifyState::Ready, NotifyState::Status(&first)], &warned);
    info!(
        watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
        "systemd notified: ready"
    );

    let stopping = {
        let (probe, shutdown, warned) = (probe.clone(), shutdown.clone(), warned.clone());
        async move {
            shutdown.begun().await;
            let line = status_line("draining", probe.connections());
            notify(
                &[NotifyState::Stopping, NotifyState::Status(&line)],
                &warned,
            );
        }
    };
    actix_rt::spawn(stopping);

    actix_rt::spawn(async move {
        let mut ticks = tokio::time::interval(tick(watchdog));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status = first;
        let mut withheld = false;
        loop {
            ticks.tick().await;
            let phase = if shutdown.is_draining() {
                "draining"
            } else {
                "ready"
            };
            let line = status_line(phase, probe.connections());
            if line != last_status {
                notify(&[NotifyState::Status(&line)], &warned);
                last_status = line;
            }
            if watchdog.is_none() {
                continue;
            }
            let stalled = probe.stalled_loops().await;
            if stalled.is_empty() {
                notify(&[NotifyState::Watchdog], &warned);
                if std::mem::take(&mut withheld) {
                    info!("liveness holds again; systemd watchdog pings resumed");
                }
            } else if !std::mem::replace(&mut withheld, true) {
                warn!(stalled = ?stalled, "event loops stalled; withholding the systemd watchdog ping");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_twice_per_period_and_status_at_least_every_5_s() {
        assert_eq!(tick(Some(Duration::from_secs(30))), STATUS_INTERVAL);
        assert_eq!(tick(Some(Duration::from_secs(4))), Duration::from_secs(2));
        assert_eq!(
            tick(Some(Duration::from_millis(200))),
            Duration::from_millis(100)
        );
        assert_eq!(tick(None), STATUS_INTERVAL);
    }
}
