//! What an application's handler actors receive and answer: the messages of
//! the realtime path (a client's [`Rpc`], a room's [`JoinRequest`],
//! [`PublishRequest`] and [`LeaveNotice`]), who sent them ([`Caller`]),
//! a handler's refusal ([`Rejection`]), and [`Target`], the one place a
//! call to a supervised handler gets its deadline and its failures.
//!
//! They live here, next to the actors, so that the built-in services answer
//! RPC in their own modules like any application actor. [`UserOnline`] and
//! [`UserOffline`] go to user handlers (see [`crate::online`]). They are
//! here so that the built-in services answer
//! RPC in their own modules like any application actor; the server routes
//! to them (`holdfast_server::handlers`, which re-exports this module).

mod caller;
mod rejection;
mod room;
mod rpc;
mod target;
mod user;

pub use caller::Caller;
pub use rejection::{Rejection, INVALID_CODE};
pub use room::{Accept, JoinRequest, LeaveNotice, PublishRequest, RoomHandler};
pub use rpc::Rpc;
pub use target::{Failure, Target};
pub use user::{user_listener, UserOffline, UserOnline};
