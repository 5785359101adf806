//! [`UserOnline`] and [`UserOffline`]: what a user handler is told (see
//! [`crate::online`]), once per cluster.

use std::sync::Arc;

use actix::prelude::*;

use super::Target;
use crate::online::{Listener, UserChange};
use crate::supervision::ChildRef;
use actix::dev::ToEnvelope;

/// A user's first session anywhere began.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct UserOnline {
    /// The user.
    pub user: Arc<str>,
}

/// A user's last session ended (closed and not resumed within the session
/// TTL, or ended by the application).
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct UserOffline {
    /// The user.
    pub user: Arc<str>,
}

/// Tells a supervised actor handling [`UserOnline`] and [`UserOffline`];
/// a change while it restarts is not told to it (the event bus has it).
pub fn user_listener<A>(child: ChildRef<A>) -> Listener
where
    A: Actor + Handler<UserOnline> + Handler<UserOffline>,
    A::Context: ToEnvelope<A, UserOnline> + ToEnvelope<A, UserOffline>,
{
    let online: Target<UserOnline> = Target::of(child.clone());
    let offline: Target<UserOffline> = Target::of(child);
    Arc::new(move |change| match change {
        UserChange::Online(user) => online.tell(UserOnline { user: user.clone() }),
        UserChange::Offline(user) => offline.tell(UserOffline { user: user.clone() }),
    })
}
