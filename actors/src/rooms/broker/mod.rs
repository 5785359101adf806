//! The broker seam: where a room's offsets are assigned and its history is
//! kept, and how publications travel between nodes.
//!
//! A hub asks its [`Broker`] for three things: [`publish`](Broker::publish)
//! (the next offset of a room, for one message), [`head`](Broker::head) (a
//! room's epoch and latest offset) and [`history`](Broker::history) (stored
//! messages in an offset range). Two brokers exist:
//!
//! - [`Local`]: one node. Offsets come from the room's own state, at once
//!   (no I/O on the publish path); history is the hub's ring.
//! - [`redis::RedisBroker`]: several nodes on one Redis. Redis assigns
//!   offsets (one Lua script per publish) and keeps history in a stream per
//!   room; Pub/Sub carries publications to the other nodes.
//!
//! A shared broker hands other nodes' publications to the hubs through
//! [`Inbound`]; a hub puts them, and its own, into offset order with a
//! [`Sequence`] per room: what is ahead of a gap is held, the gap is read
//! with `history`, duplicates are dropped, a new epoch is adopted. A node
//! applies its own publication once, when `publish` answers, through the
//! same [`Sequence`] as a remote one; the shared broker does not hand it
//! back.
//!
//! Adding a broker, e.g. NATS JetStream (a stream per room prefix, the
//! subject per room, the stream sequence of the subject as the offset):
//! implement [`Broker`] (publish with an expected-last-sequence header so
//! that two nodes cannot take one offset, head from the subject's last
//! message, history with an ordered consumer over a sequence range), call
//! [`Inbound::publication`] from a subscription for every other node's
//! message and [`Inbound::resync`] whenever the subscription restarts, and
//! pass it to `Rooms::new`. The hub, the room model and the transport do not
//! change.

mod local;
pub mod redis;
mod sequence;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytestring::ByteString;
use serde_json::value::RawValue;

pub use local::Local;

use super::{PresenceEntry, RoomSummary};
pub(crate) use sequence::{Arrival, Filled, Read, Sequence};

/// A room's place in its broker's sequence: its epoch and its latest offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// Changes whenever the offsets restart.
    pub epoch: Arc<str>,
    /// The latest offset assigned (0: none yet).
    pub offset: u64,
}

/// Messages of a room that its broker still holds.
#[derive(Debug, Clone)]
pub struct History {
    /// The room's position when they were read.
    pub head: Position,
    /// The oldest offset held (0: none).
    pub oldest: u64,
    /// `(offset, message frame)`, in offset order.
    pub entries: Vec<(u64, ByteString)>,
}

/// A message another node published, as its broker delivers it.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The room.
    pub room: Arc<str>,
    /// The epoch and the message's offset.
    pub position: Position,
    /// The `message` frame.
    pub frame: ByteString,
}

/// Why a broker could not answer (messages carry no secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// An answer that comes later.
pub type BrokerFuture<T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send>>;

/// A broker's answer: at once (a node-local broker, or a shared one that is
/// down), or later.
pub enum Reply<T> {
    /// The answer, known now.
    Now(Result<T, BrokerError>),
    /// The answer, once the broker gives it.
    Later(BrokerFuture<T>),
}

/// Where a room's offsets are assigned and its history kept. See the module
/// docs.
pub trait Broker: Send + Sync + 'static {
    /// Whether several nodes share it: then positions come from it, other
    /// nodes' publications come through [`Inbound`], and hubs order them.
    fn shared(&self) -> bool;

    /// Whether it answers; while not, rooms continue on node-local epochs.
    fn is_up(&self) -> bool;

    /// Assigns the next offset of `room` to a message from `user` and
    /// stores it; answers the message's position. `here` is the room as the
    /// hub knows it.
    fn publish(&self, room: &str, here: &Position, user: &str, data: &RawValue) -> Reply<Position>;

    /// The room's position, creating its epoch if the room is new. `here`
    /// is the room as the hub knows it.
    fn head(&self, room: &str, here: &Position) -> Reply<Position>;

    /// The messages of `room` with offsets in `from..=to` that the broker
    /// still holds; `None` when it keeps no history of its own (the hub's
    /// ring is the history).
    fn history(&self, room: &str, from: u64, to: u64) -> Reply<Option<History>>;

    /// Who is in `room` on every node that shares the broker, one line per
    /// user; `None` when presence is this node's alone (the hub's members).
    fn presence(&self, room: &str) -> Reply<Option<Vec<PresenceEntry>>> {
        let _ = room;
        Reply::Now(Ok(None))
    }

    /// As [`Broker::presence`], without this node's members (which the hub
    /// knows first-hand, and whose latest change may still be on its way).
    fn presence_elsewhere(&self, room: &str) -> Reply<Option<Vec<PresenceEntry>>> {
        let _ = room;
        Reply::Now(Ok(None))
    }

    /// The rooms with members on any node that shares the broker whose
    /// names start with `prefix`, by name, at most `limit`, with their
    /// member sessions on every node; `None` when the rooms are this
    /// node's alone (the shards' state answers).
    fn rooms(&self, prefix: &str, limit: usize) -> Reply<Option<Vec<RoomSummary>>> {
        let _ = (prefix, limit);
        Reply::Now(Ok(None))
    }

    /// This node's members of `room` changed, or are refreshed (every
    /// [`Broker::presence_refresh`]). The future ends once the broker has
    /// the change; the hub runs it before any presence read it makes
    /// afterwards, so that a client sees its own join. `None` when presence
    /// is node-local.
    fn members(&self, room: &str, change: Membership) -> Option<BrokerFuture<()>> {
        let _ = (room, change);
        None
    }

    /// How often hubs refresh every room's members on this node with
    /// [`Membership::All`], so that the broker can expire the members of a
    /// node that died without a goodbye; `None` when presence is node-local.
    fn presence_refresh(&self) -> Option<std::time::Duration> {
        None
    }

    /// Hands the broker where other nodes' publications go; called once,
    /// by `Rooms::new`. A broker that is not shared ignores it.
    fn attach(&self, inbound: Arc<dyn Inbound>) {
        let _ = inbound;
    }
}

/// A change of this node's members of one room.
#[derive(Debug, Clone)]
pub enum Membership {
    /// A session joined (or resumed) as `user`.
    Joined {
        /// The session.
        session: Arc<str>,
        /// Its user.
        user: Arc<str>,
    },
    /// A session left.
    Left {
        /// The session.
        session: Arc<str>,
    },
    /// Every member on this node, `(session, user)`: replaces what the
    /// broker holds for this node and renews its expiry.
    All(Vec<(Arc<str>, Arc<str>)>),
}

/// Where a shared broker hands what other nodes published.
pub trait Inbound: Send + Sync + 'static {
    /// Another node's publication, for the hub of its room.
    fn publication(&self, publication: Publication);
    /// Another node's members of `room` joined or left (so that rooms with
    /// presence events read the cluster's presence again).
    fn presence_changed(&self, room: &str);
    /// Publications may have been missed (the subscription restarted):
    /// every hub compares its rooms with the broker and fills the gaps.
    fn resync(&self);
}

/// A new random epoch: 16 hex digits.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}
