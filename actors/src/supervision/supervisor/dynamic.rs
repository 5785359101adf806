//! Dynamic children: [`AddChild`] starts a new child in a running supervisor
//! (and records it in the spec, so the supervisor's next incarnation starts it
//! too); [`RemoveChild`] stops one, bounded by its shutdown timeout, and drops
//! it from the spec and the tree's names for good.

use actix::prelude::*;

use super::super::child::AnyChildSpec;
use super::super::SupervisionError;
use super::{StopPurpose, Supervisor};
use crate::shutdown::Outcome;

/// Adds a child to a running supervisor and starts it.
#[derive(Message)]
#[rtype(result = "Result<(), SupervisionError>")]
pub struct AddChild {
    /// The new child.
    pub spec: AnyChildSpec,
}

impl Handler<AddChild> for Supervisor {
    type Result = Result<(), SupervisionError>;

    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.kernel.shutdown.is_draining() {
            return Err(SupervisionError::ShuttingDown);
        }
        let names = msg
            .spec
            .nested
            .as_ref()
            .map(|n| n.names())
            .unwrap_or_else(|| vec![msg.spec.opts.name.clone()]);
        self.kernel.claim_names(&names)?;
        self.spec.children.lock().push(msg.spec.clone());
        self.adopt(msg.spec, ctx);
        Ok(())
    }
}

/// Stops a child (bounded by its shutdown timeout) and removes it for good.
#[derive(Message)]
#[rtype(result = "Result<Outcome, SupervisionError>")]
pub struct RemoveChild {
    /// The child's name.
    pub name: String,
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseFuture<Result<Outcome, SupervisionError>>;

    fn handle(&mut self, msg: RemoveChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(i) = self.index(&msg.name) else {
            return Box::pin(futures::future::ready(Err(SupervisionError::NoSuchChild(
                msg.name,
            ))));
        };
        self.spec
            .children
            .lock()
            .retain(|c| c.opts.name != msg.name);
        match self.begin_stop(i, StopPurpose::Remove) {
            Some(stop) => Box::pin(async move { Ok(stop.run().await.2) }),
            None => {
                self.forget(i);
                Box::pin(futures::future::ready(Ok(Outcome::Stopped)))
            }
        }
    }
}
