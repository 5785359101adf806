//! The `http` actor: the server's intake, so that the `intake` shutdown stage
//! has a member and the drain delay is part of the shutdown report.
//!
//! Owns: nothing but the drain delay.
//! Answers: health (the listen address, whether it is draining).
//! Restart policy: permanent, critical, stage `intake`. Its restart loses
//! nothing; the HTTP listener itself belongs to actix-web's server, not to
//! this actor.
//! On shutdown: readiness is already 503 (the shutdown request flipped it);
//! it waits `shutdown.drain_delay_ms` so that load balancers stop routing
//! here, then stops.

use std::time::Duration;

use actix::prelude::*;
use holdfast_actors::health::{Health, HealthReply};
use holdfast_actors::shutdown::{Shutdown, Stage};
use holdfast_actors::supervision::{Child, ChildSpec};

/// See the module docs.
pub struct Intake {
    /// How long to keep serving with readiness 503 before the next stage.
    drain_delay: Duration,
    /// Read for the health details.
    shutdown: Shutdown,
    /// Where the server listens, for the health details.
    listen: String,
}

impl Actor for Intake {
    type Context = Context<Self>;
}

impl Child for Intake {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy()
            .with("listen", self.listen.clone())
            .with("draining", self.shutdown.is_draining())
            .into()
    }

    fn shutdown(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.drain_delay, |_, ctx| ctx.stop());
    }
}

/// The `http` actor's spec; its shutdown timeout covers the drain delay.
pub fn spec(drain_delay: Duration, shutdown: Shutdown, listen: String) -> ChildSpec<Intake> {
    ChildSpec::new("http", move |_| Intake {
        drain_delay,
        shutdown: shutdown.clone(),
        listen: listen.clone(),
    })
    .stage(Stage::Intake)
    .shutdown_timeout(drain_delay + Duration::from_secs(1))
}
