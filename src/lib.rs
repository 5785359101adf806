#![doc = include_str!("../README.md")]
//!
//! The umbrella crate: [`actors`] is the supervision kernel and the subsystem
//! actors, [`server`] the HTTP/WebSocket server, config and CLI.

pub use holdfast_actors as actors;
pub use holdfast_server as server;

/// What an application that extends Holdfast imports: `use holdfast::prelude::*;`
/// brings the supervision kernel (specs, the `Child` trait, health, stages),
/// the rooms, the services lease, and the server's builder and settings.
pub mod prelude {
    pub use holdfast_actors::backoff::Backoff;
    pub use holdfast_actors::health::{Health, HealthReply, Status};
    pub use holdfast_actors::lease::Lease;
    pub use holdfast_actors::rooms::{Inbox, Member, RoomEvent, Rooms};
    pub use holdfast_actors::shutdown::{Outcome, ShutdownReason, Stage};
    pub use holdfast_actors::supervision::{
        Child, ChildRef, ChildSpec, Intensity, RestartType, Strategy, SupervisorSpec,
    };
    pub use holdfast_server::{Builder, Server, Settings};
}
