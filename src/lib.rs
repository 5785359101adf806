#![doc = include_str!("../README.md")]
//!
//! The umbrella crate: [`actors`] is the supervision kernel and the subsystem
//! actors, [`server`] the HTTP/WebSocket server, config and CLI.

pub use holdfast_actors as actors;
pub use holdfast_server as server;
