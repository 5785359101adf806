//! The supervision kernel: child specs, supervisors, restart policy.
//!
//! Modelled on Erlang/OTP supervisors. See `child` for how an actor is
//! started and watched, `supervisor` for the actor that applies the policy,
//! and `policy` for the pure rules (restart types, strategies, intensity,
//! back-off).

mod child;
mod policy;
mod supervisor;

pub use crate::backoff::Backoff;
pub use child::{
    panic_message, AnyChildSpec, Child, ChildCtx, ChildOptions, ChildRef, ChildSpec, Exit,
    DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use policy::{Intensity, RestartType, RestartWindow, Strategy};
pub use supervisor::{
    AddChild, CollectHealth, CrashChild, RemoveChild, RestartChild, Restarted, ShutdownPlan,
    StopStage, Supervisor, SupervisorSpec, Terminate,
};

/// What can go wrong when changing a running tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisionError {
    /// Names key `/health/{name}`, so each may appear once in the tree.
    #[error("an actor named '{0}' already exists in the tree")]
    DuplicateName(String),
    /// The supervisor has no child of that name.
    #[error("no child named '{0}'")]
    NoSuchChild(String),
    /// Shutdown has begun; the tree takes no new children.
    #[error("the tree is shutting down")]
    ShuttingDown,
    /// The supervisor did not answer (it is restarting or stopped).
    #[error("supervisor '{0}' is not running")]
    SupervisorDown(String),
    /// The request does not apply to that actor as it is now (crashing a
    /// supervisor, restarting the root or an actor that is stopping).
    #[error("cannot do that to '{name}': {reason}")]
    NotApplicable {
        /// The actor.
        name: String,
        /// Why not.
        reason: String,
    },
}
