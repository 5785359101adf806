//! How a room hub reaches its members: [`Member`], [`Inbox`] (an actor's
//! mailbox, or one slot of an [`Outlet`]), and [`RoomEvent`], what a hub
//! sends them.
//!
//! An outlet serves many members at once (the WebSocket transport has one
//! per HTTP worker thread): a room hands each message to each of its outlets
//! once, however many of its members the outlet serves.

use std::sync::Arc;
use std::time::Instant;

use super::JoinAnswer;
use actix::prelude::*;
use bytestring::ByteString;
use serde_json::Value;

/// What a hub sends to a member's connection.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum RoomEvent {
    /// A message: the frame to write as is.
    Message {
        /// The room.
        room: Arc<str>,
        /// Its offset.
        offset: u64,
        /// The serialized `message` frame, shared by every member.
        frame: ByteString,
        /// When the hub accepted it (publish-to-deliver latency); `None` for replays.
        published_at: Option<Instant>,
    },
    /// The answer to a join, sent through the same channel as messages so
    /// that it reaches the client before any message that follows it.
    Joined {
        /// The room.
        room: Arc<str>,
        /// The room's latest offset at the join.
        offset: u64,
        /// The room's epoch.
        epoch: Arc<str>,
        /// What the join asked to echo.
        answer: JoinAnswer,
    },
    /// The answer to a leave the client asked for, sent through the same
    /// channel as messages: after it, nothing of the room reaches the member.
    Left {
        /// The room.
        room: Arc<str>,
        /// The request id to echo.
        id: Option<Value>,
    },
    /// The room's epoch changed while the member was in it: offsets
    /// restart; the next message has `offset + 1`.
    Epoch {
        /// The room.
        room: Arc<str>,
        /// The new epoch.
        epoch: Arc<str>,
        /// The offset the next message follows.
        offset: u64,
    },
    /// A `presence_diff` of the room (no offset, not history).
    Presence {
        /// The room.
        room: Arc<str>,
        /// The serialized `presence_diff` frame.
        frame: ByteString,
    },
    /// The end of a resume replay for one room; every replayed message of the
    /// room was sent before it.
    Replayed {
        /// The room.
        room: Arc<str>,
        /// How many messages were replayed.
        replayed: u64,
        /// Whether history reached back to the client's offset (and the epoch matched).
        complete: bool,
        /// The room's epoch.
        epoch: Arc<str>,
        /// The latest offset replayed or current.
        offset: u64,
    },
}

/// A connection in a room.
#[derive(Clone)]
pub struct Member {
    /// Its session id.
    pub session: Arc<str>,
    /// Its user id.
    pub user: Arc<str>,
    /// Where its events go.
    pub inbox: Inbox,
}

/// Where a member's events go.
#[derive(Clone)]
pub enum Inbox {
    /// An actor's mailbox: every event is one message to it.
    Actor(Recipient<RoomEvent>),
    /// One of the members an [`Outlet`] serves, known to it as `slot`.
    Outlet {
        /// The outlet.
        outlet: Arc<dyn Outlet>,
        /// The member's number at that outlet.
        slot: u64,
    },
}

impl Inbox {
    pub(super) fn send(&self, event: RoomEvent) {
        match self {
            Self::Actor(recipient) => recipient.do_send(event),
            Self::Outlet { outlet, slot } => outlet.direct(*slot, event),
        }
    }

    pub(super) fn connected(&self) -> bool {
        match self {
            Self::Actor(recipient) => recipient.connected(),
            Self::Outlet { outlet, slot } => outlet.connected(*slot),
        }
    }

    /// Whether both reach the same connection.
    pub(super) fn same(&self, other: &Inbox) -> bool {
        match (self, other) {
            (Self::Actor(a), Self::Actor(b)) => a == b,
            (Self::Outlet { outlet: a, slot: x }, Self::Outlet { outlet: b, slot: y }) => {
                x == y && Arc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}

/// Serves many members at once, e.g. every connection of one HTTP worker
/// thread. Calls come from hub threads and must not block.
pub trait Outlet: Send + Sync {
    /// A message of `room`, for every member of the room this outlet serves.
    /// Outlets see a room's messages in offset order, after the `Joined` or
    /// `Replayed` of each member they serve.
    fn broadcast(
        &self,
        room: &Arc<str>,
        offset: u64,
        frame: &ByteString,
        published_at: Option<Instant>,
    );
    /// An event for the one member `slot` (joined, replayed, a replayed message).
    fn direct(&self, slot: u64, event: RoomEvent);
    /// Whether member `slot` is still connected.
    fn connected(&self, slot: u64) -> bool;
}
