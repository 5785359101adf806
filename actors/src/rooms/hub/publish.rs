//! A publish in the hub: the broker gives it its position (or, with the
//! broker down, the room a node-local one), then it is delivered, with the
//! `room.publish` and `room.deliver` spans of a traced publish.

use super::*;

impl Handler<Publish> for Hub {
    type Result = ResponseActFuture<Self, Position>;

    fn handle(&mut self, mut msg: Publish, ctx: &mut Context<Self>) -> Self::Result {
        self.depth.dec();
        msg.trace = trace::child_of(&msg.trace, || {
            tracing::info_span!(
                target: trace::TARGET,
                parent: &msg.trace,
                "room.publish",
                room = %msg.room,
                offset = tracing::field::Empty,
            )
        });
        let here = self.state.lock().room(&msg.room).position();
        match self.broker.publish(&msg.room, &here, &msg.user, &msg.data) {
            Reply::Now(Ok(position)) => {
                self.published(ctx, &msg, position.clone());
                Box::pin(actix::fut::ready(position))
            }
            Reply::Now(Err(_)) => Box::pin(actix::fut::ready(self.publish_local(&msg))),
            Reply::Later(fut) => {
                Box::pin(
                    fut.into_actor(self)
                        .map(move |result, act, ctx| match result {
                            Ok(position) => {
                                act.published(ctx, &msg, position.clone());
                                position
                            }
                            Err(_) => act.publish_local(&msg),
                        }),
                )
            }
        }
    }
}

impl Hub {
    /// The broker gave `msg` its position: it is applied (and delivered)
    /// through the same path as another node's publication.
    fn published(&mut self, ctx: &mut Context<Self>, msg: &Publish, position: Position) {
        let frame = message_frame(&msg.room, position.offset, &msg.user, &msg.data);
        if self.broker.shared() {
            let members = {
                let mut state = self.state.lock();
                state.published += 1;
                state.room(&msg.room).members.len()
            };
            // A publication held behind a gap is delivered later, untraced.
            let _delivering = delivering(msg, position.offset, members).entered();
            self.apply(ctx, msg.room.clone(), position, frame, Some(Instant::now()));
        } else {
            // One take of the shard's lock on the one-node publish path.
            let mut state = self.state.lock();
            state.published += 1;
            let room = state.room(&msg.room);
            let _delivering = delivering(msg, position.offset, room.members.len()).entered();
            room.deliver(&msg.room, position.offset, frame, Some(Instant::now()));
        }
    }
}

/// The `room.deliver` span of a traced publish that got `offset`: the hand-
/// over to the room's `members` on this node (the transport's `ws.fanout`
/// spans are its children).
pub(super) fn delivering(msg: &Publish, offset: u64, members: usize) -> tracing::Span {
    msg.trace.record("offset", offset);
    trace::child_of(&msg.trace, || {
        tracing::info_span!(
            target: trace::TARGET,
            parent: &msg.trace,
            "room.deliver",
            room = %msg.room,
            offset,
            members,
        )
    })
}
