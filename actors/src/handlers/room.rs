//! Room handlers: a user actor that decides on joins and publishes in the
//! rooms of a namespace and is told of leaves. [`RoomHandler`] holds one.

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::supervision::ChildRef;

use super::{Caller, Rejection, Target};

/// A handler's "yes".
#[derive(Clone, Debug, PartialEq)]
pub enum Accept {
    /// As asked: a join with nothing more, a publish broadcast as sent.
    AsSent,
    /// With `data`: sent in `joined`, or broadcast (and kept in history) in
    /// place of what the client published.
    With(Value),
}

/// A client asks to join a room of the handler's namespace. A rejection
/// (default code `forbidden`) leaves no membership.
#[derive(Debug, Message)]
#[rtype(result = "Result<Accept, Rejection>")]
pub struct JoinRequest {
    /// The room.
    pub room: String,
    /// Who asks.
    pub caller: Caller,
}

/// A client publishes to a room of the handler's namespace. A rejected
/// publish is not broadcast and takes no offset.
#[derive(Debug, Message)]
#[rtype(result = "Result<Accept, Rejection>")]
pub struct PublishRequest {
    /// The room.
    pub room: String,
    /// The message body, byte for byte as the client sent it.
    pub data: Box<RawValue>,
    /// Who publishes.
    pub caller: Caller,
}

impl PublishRequest {
    /// `data` read as `T`, or a `bad_request` naming what is wrong.
    ///
    /// # Errors
    /// `data` does not have `T`'s shape.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        serde_json::from_str(self.data.get())
            .map_err(|e| Rejection::bad_request(format!("data: {e}")))
    }
}

/// A member left a room of the handler's namespace: it asked, or its
/// connection ended. Cannot be refused.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LeaveNotice {
    /// The room.
    pub room: String,
    /// Who left.
    pub caller: Caller,
    /// Whether the connection ended (rather than a `leave`).
    pub disconnected: bool,
}

/// A supervised actor handling [`JoinRequest`], [`PublishRequest`] and
/// [`LeaveNotice`] for the rooms of the namespaces that name it.
#[derive(Clone)]
pub struct RoomHandler {
    /// Where joins go.
    pub join: Target<JoinRequest>,
    /// Where publishes go.
    pub publish: Target<PublishRequest>,
    /// Where leaves are told.
    pub leave: Target<LeaveNotice>,
}

impl RoomHandler {
    /// The actor behind `child`, whichever incarnation runs.
    pub fn of<A>(child: ChildRef<A>) -> Self
    where
        A: Actor + Handler<JoinRequest> + Handler<PublishRequest> + Handler<LeaveNotice>,
        A::Context:
            ToEnvelope<A, JoinRequest> + ToEnvelope<A, PublishRequest> + ToEnvelope<A, LeaveNotice>,
    {
        Self {
            join: Target::of(child.clone()),
            publish: Target::of(child.clone()),
            leave: Target::of(child),
        }
    }
}
