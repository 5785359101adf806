//! A publish in the hub: the broker gives it its position (or, with the
//! broker down, the room a node-local one), then it is delivered, with the
//! `room.publish` and `room.deliver` spans of a traced publish. A shared
//! broker's store outlives the hub that asked for it ([`Stored`]).

use super::*;
use crate::rooms::broker::BrokerError;
use crate::rooms::RoomError;

impl Handler<Publish> for Hub {
    type Result = ResponseFuture<Result<Position, RoomError>>;

    /// A broker that answers later stores the message off this hub's
    /// context, so that a crash of the hub meanwhile loses neither the
    /// message nor its answer: whichever incarnation runs then applies it
    /// ([`Stored`]), and the publisher is acknowledged.
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
                Box::pin(std::future::ready(Ok(position)))
            }
            Reply::Now(Err(_)) => Box::pin(std::future::ready(Ok(self.publish_local(&msg)))),
            Reply::Later(store) => {
                let hub = self.me.clone();
                Box::pin(async move {
                    let stored = store.await;
                    let position = stored.as_ref().ok().cloned();
                    let applied = match hub.addr() {
                        Some(hub) => hub.send(Stored { msg, stored }).await.ok(),
                        None => None,
                    };
                    // No hub to apply it: stored, it reaches this node's
                    // members through the next incarnation's reconcile;
                    // not stored, it was not published.
                    applied.or(position).ok_or(RoomError::Unavailable)
                })
            }
        }
    }
}

/// What the broker answered to a publish that a hub (this one, or one
/// that crashed since) handed it.
#[derive(Message)]
#[rtype(result = "Position")]
struct Stored {
    msg: Publish,
    stored: Result<Position, BrokerError>,
}

impl Handler<Stored> for Hub {
    type Result = MessageResult<Stored>;

    /// Stored: applied and delivered; not (the broker failed): served on a
    /// node-local epoch.
    fn handle(&mut self, Stored { msg, stored }: Stored, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match stored {
            Ok(position) => {
                self.published(ctx, &msg, position.clone());
                position
            }
            Err(_) => self.publish_local(&msg),
        })
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
