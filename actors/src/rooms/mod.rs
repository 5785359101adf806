//! The `rooms` actors: room hubs, sharded over several arbiters.
//!
//! Owns: every room's membership, offset, epoch and history ring, split over
//! `rooms-0`, `rooms-1`, ... (one hub per shard, each on its own arbiter, all
//! under the supervisor `rooms`). A room lives in the shard its name hashes to.
//! Answers: [`Join`], [`Leave`], [`Publish`], [`Presence`], [`Resume`],
//! through the [`Rooms`] handle (and a chaos crash, [`Rooms::crash`]).
//! Fan-out: a published message is serialized once, into a `ByteString`,
//! and that same buffer goes to every member (and into the history ring).
//! A member is reached through its [`Inbox`]: an actor's mailbox (one send
//! per member), or an [`Outlet`] that serves many members, such as an HTTP
//! worker thread with its WebSocket connections. A room sends a message to
//! each outlet once, however many of its members the outlet serves, so
//! fan-out to a thousand members costs the hub a few sends, not a thousand.
//! Offsets come from a [`Broker`]: [`Local`] on one node, the Redis broker
//! ([`broker::redis::RedisBroker`]) across nodes.
//! Restart policy: permanent, critical, stage `connections`.
//! Lost on a crash: only the request being handled when the hub panicked. A
//! shard's state lives outside its hub (in [`Rooms`]) and every incarnation
//! is handed the same state, so membership, offsets, epochs and history
//! survive: offsets continue without a gap or a reset and every acknowledged
//! message stays in history. A publish is applied only once it cannot fail,
//! so a panic never leaves a half-assigned offset. Requests that arrive while
//! a hub restarts are refused with [`RoomError::Unavailable`] (the protocol's
//! `unavailable`), never dropped in silence.
//!
//! Files, one concern each: `handle` (the [`Rooms`] handle and the
//! messages), `hub` (the hub, sole writer of its shard's rooms), `room` (the
//! room model: members, offset, epoch, history, fan-out), `outlet` (how a
//! hub reaches members), `presence` (presence events: what members were
//! told, and the batched `presence_diff`), `frame` (the
//! one `message` encoder) and
//! [`broker`] (the seam: [`Local`], Redis, and the offset order of a shared
//! broker's publications).

pub mod broker;
mod frame;
mod handle;
mod hub;
mod outlet;
mod presence;
mod room;

use serde::Serialize;

pub use broker::{Broker, Local, Position};
pub use frame::{message_frame, HistoryMessage};
pub use handle::{
    HistoryPage, Join, JoinAnswer, Leave, LeaveAnswer, Presence, Publish, ReadHistory, Resume,
    RoomList, RoomSummary, Rooms,
};
pub use outlet::{Inbox, Member, Outlet, RoomEvent};
pub use room::{HistoryLimits, RoomConfig, RoomOptions};

/// Why a room request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room's hub is restarting or stopped; safe to retry.
    #[error("the room service is restarting; retry")]
    Unavailable,
}

/// One line of a presence answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user.
    pub user: String,
    /// How many of the user's sessions are in the room.
    pub sessions: usize,
}
