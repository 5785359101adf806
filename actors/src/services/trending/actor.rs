//! The trending actor: refreshes every feed on its interval while this node
//! holds the services lease, and answers [`Refresh`].

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use serde_json::{Map, Value};
use tracing::{debug, info};

use super::{BreakerState, Decision, Inner};
use crate::health::{Health, HealthReply};
use crate::supervision::Child;

/// Clears a feed's in-flight mark when its fetch ends, or is cancelled with
/// the actor that ran it.
pub(super) struct InFlight {
    pub(super) inner: Arc<Inner>,
    pub(super) idx: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut feeds = self.inner.feeds.lock();
        if let Some(f) = feeds.get_mut(self.idx) {
            f.in_flight = false;
            // A trial cancelled mid-flight must not leave the breaker half-open forever.
            if f.breaker.state == BreakerState::HalfOpen {
                f.breaker.state = BreakerState::Open;
                f.breaker.until = Some(Instant::now());
            }
        }
    }
}

/// The trending actor. See the module docs.
pub struct TrendingActor {
    /// Feeds, client, rooms and metrics; shared with [`Trending`].
    pub(super) inner: Arc<Inner>,
}

impl TrendingActor {
    fn refresh(&mut self, idx: usize, counted: bool, ctx: &mut Context<Self>) {
        if !self.inner.lease.held() {
            return debug!(feed = idx, "standby: another node fetches the feeds");
        }
        match self.inner.decide(idx, counted) {
            Decision::Fetch { trial } => {
                ctx.spawn(self.inner.clone().fetch(idx, trial).into_actor(self));
            }
            other => debug!(feed = idx, decision = ?other, "no fetch"),
        }
    }
}

impl Actor for TrendingActor {
    type Context = Context<Self>;

    /// Refreshes every feed now and every `interval`. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let feeds = self.inner.settings.feeds.len();
        if feeds == 0 {
            debug!("no trending feeds configured; idle");
            return;
        }
        info!(
            feeds,
            interval_ms = self.inner.settings.interval().as_millis() as u64,
            "trending feeds refreshing"
        );
        for idx in 0..feeds {
            self.refresh(idx, false, ctx);
        }
        ctx.run_interval(self.inner.settings.interval(), move |act, ctx| {
            for idx in 0..feeds {
                act.refresh(idx, false, ctx);
            }
        });
    }
}

impl Child for TrendingActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let feeds = self.inner.feeds.lock();
        let open: Vec<&str> = feeds
            .iter()
            .filter(|f| f.breaker.state != BreakerState::Closed)
            .map(|f| f.config.name.as_str())
            .collect();
        let mut h = if open.is_empty() {
            Health::healthy()
        } else {
            Health::degraded(format!("circuit open for: {}", open.join(", ")))
        };
        let breakers: Map<String, Value> = feeds
            .iter()
            .map(|f| (f.config.name.clone(), f.breaker.state.as_str().into()))
            .collect();
        h = h
            .with("feeds", feeds.len())
            .with("active", !feeds.is_empty())
            .with("breakers", Value::Object(breakers))
            .with("cached", feeds.iter().filter(|f| f.cache.is_some()).count());
        self.inner.lease.describe(h).into()
    }
}

/// Refresh a feed now, unless its cache is fresh or a fetch is running.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh {
    /// The feed's index in the configured list.
    pub feed: usize,
    /// Whether the caller already counted the cache read (a snapshot did).
    pub counted: bool,
}

impl Handler<Refresh> for TrendingActor {
    type Result = ();

    fn handle(&mut self, msg: Refresh, ctx: &mut Context<Self>) {
        self.refresh(msg.feed, msg.counted, ctx);
    }
}
