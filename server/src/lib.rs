//! The `holdfast` server: HTTP and WebSocket layer, config, CLI.
//!
//! A map of the crate, one line per module:
//!
//! - [`cli`]: the command line (`serve`, `check`, `config`, `monitor`) and signal handling.
//! - [`config`]: typed, layered, validated configuration.
//! - [`app`]: builds the supervision tree from config, serves, shuts down.
//! - [`http`]: routes, health, metrics and admin endpoints, JSON errors, request logging.
//! - [`logging`]: JSON or human logs, size-rotated log files, panic hook.
//! - [`handlers`]: the application layer: RPC and room handlers, as supervised actors.
//! - [`ws`]: the WebSocket transport (`/ws`), the only user of actix-web-actors.
//! - [`auth`]: HS256 JWT verification and room patterns.
//! - [`monitor`]: `holdfast monitor`, the external watchdog with webhook and email alerts.
//! - [`fuzz`]: the entry points of the fuzz targets (`fuzz/`) and the corpus replay test.
//! - [`systemd`]: `Type=notify` readiness, watchdog, status and stopping notifications.
#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod fuzz;
pub mod handlers;
pub mod http;
pub mod logging;
pub mod monitor;
pub mod systemd;
pub mod telemetry;
pub mod ws;

pub use app::{Builder, Server};
pub use config::Settings;
