//! [`PrintersActor`]: one poll timer per printer, the polls in flight, and
//! the health it reports. Its RPC methods are in `commands`.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{debug, info};

use super::{Inner, PrinterState};
use crate::health::{Health, HealthReply};
use crate::supervision::Child;

/// The printers actor. See the module docs.
pub struct PrintersActor {
    /// Printers, client, rooms and metrics; shared with [`super::Printers`].
    pub(super) inner: Arc<Inner>,
}

impl PrintersActor {
    fn poll(&mut self, idx: usize, ctx: &mut Context<Self>) {
        if !self.inner.lease.held() {
            // Standby: another node polls; look again in one interval.
            let every = self.inner.printers.lock()[idx].config.interval();
            ctx.run_later(every, move |act, ctx| act.poll(idx, ctx));
            return;
        }
        ctx.spawn(
            self.inner
                .clone()
                .observe(idx)
                .into_actor(self)
                .map(move |obs, act, ctx| {
                    act.inner.record(idx, obs);
                    let delay = act.inner.schedule(idx);
                    ctx.run_later(delay, move |act, ctx| act.poll(idx, ctx));
                }),
        );
    }
}

impl Actor for PrintersActor {
    type Context = Context<Self>;

    /// Polls every printer now; each poll arms the next. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let n = self.inner.settings.devices.len();
        if n == 0 {
            debug!("no printers configured; idle");
            return;
        }
        info!(printers = n, "monitoring printers");
        for idx in 0..n {
            self.poll(idx, ctx);
        }
    }
}

impl Child for PrintersActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let (count, down) = {
            let printers = self.inner.printers.lock();
            let down: Vec<String> = printers
                .iter()
                .filter(|p| {
                    p.current.as_ref().is_some_and(|c| {
                        matches!(c.state, PrinterState::Offline | PrinterState::Error)
                    })
                })
                .map(|p| p.config.name.clone())
                .collect();
            (printers.len(), down)
        };
        let h = if down.is_empty() {
            Health::healthy()
        } else {
            Health::degraded(format!("offline or in error: {}", down.join(", ")))
        };
        let h = h
            .with("printers", count)
            .with("monitoring", count > 0)
            .with("states", self.inner.states());
        self.inner.lease.describe(h).into()
    }
}
