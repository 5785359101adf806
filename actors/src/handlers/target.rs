//! [`Target`]: the supervised actor a call goes to, whichever incarnation
//! is running, and the one place a call gets its deadline and its failures.

use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::supervision::ChildRef;

/// How a call to a handler failed (the handler's own refusals are answers,
/// not failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not running (restarting, or stopped), or it stopped while the call
    /// was queued or handled (a panic): `unavailable`.
    Unavailable,
    /// No answer within the deadline: `timeout`.
    Timeout,
}

/// A handler for messages `M`: the address of whichever incarnation of a
/// supervised actor runs now. Built from the actor's
/// [`ChildRef`] (`spec.child_ref()`).
pub struct Target<M>
where
    M: Message + Send,
    M::Result: Send,
{
    addr: Arc<dyn Fn() -> Option<Recipient<M>> + Send + Sync>,
}

impl<M> Clone for Target<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
        }
    }
}

impl<M> Target<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    /// The actor behind `child`, whichever incarnation runs.
    pub fn of<A>(child: ChildRef<A>) -> Self
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        Self {
            addr: Arc::new(move || child.addr().map(Addr::recipient)),
        }
    }

    /// Sends `msg` and waits at most `deadline` for the answer.
    pub async fn call(&self, msg: M, deadline: Duration) -> Result<M::Result, Failure> {
        let recipient = (self.addr)().ok_or(Failure::Unavailable)?;
        match recipient.send(msg).timeout(deadline).await {
            Ok(answer) => Ok(answer),
            Err(MailboxError::Timeout) => Err(Failure::Timeout),
            Err(MailboxError::Closed) => Err(Failure::Unavailable),
        }
    }

    /// Sends `msg` without waiting; dropped while the actor is down.
    pub fn tell(&self, msg: M) {
        if let Some(recipient) = (self.addr)() {
            recipient.do_send(msg);
        }
    }
}
