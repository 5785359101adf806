//! A running server: its address, handles, and the staged shutdown when a
//! control event arrives.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::web;

use holdfast_actors::scheduler::Scheduler;
use holdfast_actors::shutdown::{
    ControlEvent, ControlEvents, Shutdown, ShutdownReason, ShutdownReport,
};
use holdfast_actors::supervision::{ChildRef, ChildSpec, SupervisionError, Supervisor};
use holdfast_actors::Tree;

use super::AppContext;
use crate::http::{self, AppState};

/// Liveness and load of a running server, as an outer watchdog sees them.
#[derive(Clone)]
pub struct Probe {
    state: web::Data<AppState>,
    connections: holdfast_actors::connections::Connections,
}

impl Probe {
    /// The event loops that did not answer within the health timeout; empty
    /// while the server is live (the same test as `/health/live`).
    pub async fn stalled_loops(&self) -> Vec<String> {
        http::health::stalled_loops(&self.state).await
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.count()
    }
}

/// A running server.
pub struct Server {
    pub(super) addr: SocketAddr,
    pub(super) context: AppContext,
    pub(super) state: web::Data<AppState>,
    /// One thread per room shard; stopped after the shutdown.
    pub(super) room_arbiters: Vec<Arbiter>,
    pub(super) http: ServerHandle,
    /// The WebSocket connections' sockets, which the HTTP server does not count.
    pub(super) sockets: crate::ws::Sockets,
    pub(super) control: ControlEvents,
    pub(super) services: ChildRef<Supervisor>,
    pub(super) http_timeout: Duration,
}

impl Server {
    /// The address it listens on (the real port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle that asks for the staged shutdown (signals, admin, tests).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.context.kernel.shutdown.clone()
    }

    /// The running tree.
    pub fn tree(&self) -> &Tree {
        &self.state.tree
    }

    /// The database handle.
    pub fn db(&self) -> &holdfast_actors::db::Db {
        &self.context.db
    }

    /// The room hubs (tests, chaos).
    pub fn rooms(&self) -> &holdfast_actors::rooms::Rooms {
        &self.context.rooms
    }

    /// The event loops that liveness watches (`/health/live`, the systemd
    /// watchdog), by name: `main` and one per room shard (`rooms-0`, ...).
    pub fn event_loops(&self) -> &[(String, ArbiterHandle)] {
        &self.state.arbiters
    }

    /// The handles the application was mounted with.
    pub fn context(&self) -> &AppContext {
        &self.context
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.context.scheduler
    }

    /// A probe of the server's liveness and load for an outer watchdog
    /// (systemd); cheap to clone, usable after the server is moved.
    pub fn probe(&self) -> Probe {
        Probe {
            state: self.state.clone(),
            connections: self.context.connections.clone(),
        }
    }

    /// The `services` supervisor, to add user actors at run time.
    pub fn services(&self) -> Option<Addr<Supervisor>> {
        self.services.addr()
    }

    /// Adds a user actor under `services` while the server runs.
    ///
    /// # Errors
    /// A duplicate name, a shutdown in progress, or `services` restarting.
    pub async fn add_service<A: holdfast_actors::supervision::Child>(
        &self,
        spec: ChildSpec<A>,
    ) -> Result<(), SupervisionError> {
        let services = self
            .services()
            .ok_or_else(|| SupervisionError::SupervisorDown("services".into()))?;
        self.tree().add_child(&services, spec).await
    }

    /// Waits for the first control event, runs the staged shutdown, then
    /// stops the HTTP server once every WebSocket connection has written
    /// its last frames (bounded, both). Returns the report; its
    /// `exit_code` is the process's.
    pub async fn run_until_stopped(mut self) -> ShutdownReport {
        let reason = match self.control.recv().await {
            Some(ControlEvent::Shutdown(reason)) => reason,
            None => ShutdownReason::Requested {
                by: "every shutdown handle was dropped".into(),
            },
        };
        let report = self.state.tree.shutdown(reason).await;
        let stop = async {
            self.sockets.closed().await;
            self.http.stop(true).await;
        };
        if tokio::time::timeout(self.http_timeout, stop).await.is_err() {
            tracing::warn!(
                timeout_ms = self.http_timeout.as_millis() as u64,
                "HTTP server overran its stop timeout"
            );
        }
        for arbiter in &self.room_arbiters {
            arbiter.stop();
        }
        report
    }
}
