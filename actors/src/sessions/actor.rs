//! The `sessions` actor: flushes the store's pending writes on an interval
//! and reports its health.

use super::*;

/// The `sessions` actor. See the module docs.
pub struct SessionsActor {
    store: Arc<PersistentSessions>,
    rooms: crate::rooms::Rooms,
    flush_interval: Duration,
    /// A flush is in flight; ticks meanwhile are skipped.
    flushing: bool,
    /// The last write failure, for health.
    last_error: Option<String>,
}

impl SessionsActor {
    /// The actor's spec: permanent, non-critical, stage `core`.
    pub fn spec(
        store: Arc<PersistentSessions>,
        rooms: crate::rooms::Rooms,
        flush_interval: Duration,
        shutdown_timeout: Duration,
    ) -> crate::supervision::ChildSpec<SessionsActor> {
        crate::supervision::ChildSpec::new("sessions", move |_| SessionsActor {
            store: store.clone(),
            rooms: rooms.clone(),
            flush_interval,
            flushing: false,
            last_error: None,
        })
        .critical(false)
        .stage(crate::shutdown::Stage::Core)
        .shutdown_timeout(shutdown_timeout)
    }

    fn tick(&mut self, ctx: &mut actix::Context<Self>) {
        use actix::prelude::*;
        if self.flushing || !self.store.db.is_up() {
            return;
        }
        let store = self.store.clone();
        self.flushing = true;
        ctx.spawn(
            async move {
                if !store.warmed.load(std::sync::atomic::Ordering::SeqCst) {
                    store.warm().await?;
                }
                store.flush_all().await
            }
            .into_actor(self)
            .map(|result, act, _| {
                act.flushing = false;
                match result {
                    Ok(_) => act.last_error = None,
                    Err(e) => {
                        tracing::warn!(error = %e, pending = act.store.pending(), "session write-behind failed; kept pending");
                        act.last_error = Some(e.to_string());
                    }
                }
            }),
        );
    }
}

impl actix::Actor for SessionsActor {
    type Context = actix::Context<Self>;

    /// Flushes every `flush_interval`. Cannot fail.
    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::AsyncContext;
        ctx.run_interval(self.flush_interval, |act, ctx| act.tick(ctx));
    }
}

impl crate::supervision::Child for SessionsActor {
    fn health(&mut self, _ctx: &mut actix::Context<Self>) -> crate::health::HealthReply<Self> {
        let pending = self.store.pending();
        let mut h = crate::health::Health::healthy();
        if pending > 0 && !self.store.db.is_up() {
            h = crate::health::Health::degraded("database down; session writes pending");
        }
        if let Some(e) = &self.last_error {
            h = h.with("last_error", e.clone());
        }
        h.with("sessions", self.store.len())
            .with("detached", self.store.detached())
            .with("evicted", self.store.metrics.evicted.get())
            .with("pending_writes", pending)
            .with("dropped_writes", self.store.metrics.dropped.get())
            .into()
    }

    /// Flushes what is pending and checkpoints the rooms, then stops.
    fn shutdown(&mut self, ctx: &mut actix::Context<Self>) {
        use actix::prelude::*;
        let store = self.store.clone();
        let rows: Vec<RoomRow> = self
            .rooms
            .checkpoint()
            .into_iter()
            .map(|(name, epoch, offset)| RoomRow {
                name,
                epoch,
                last_offset: i64::try_from(offset).unwrap_or(i64::MAX),
                clean: true,
                updated_at: now_unix_ms(),
            })
            .collect();
        ctx.spawn(
            async move {
                match store.flush_all().await {
                    Ok(n) => tracing::info!(written = n, "sessions flushed"),
                    Err(e) => tracing::error!(error = %e, pending = store.pending(), "sessions not flushed at shutdown"),
                }
                match save_room_checkpoint(&store.db, rows).await {
                    Ok(n) => tracing::info!(rooms = n, "room offsets checkpointed"),
                    Err(e) => tracing::error!(error = %e, "room checkpoint failed; rooms will start new epochs"),
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}
