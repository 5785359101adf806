//! The printers' RPC methods, under the prefix [`PREFIX`]:
//!
//! | method | `data` | reply |
//! |---|---|---|
//! | `printers.list` | none | `{"printers":[STATUS, …]}`, in configuration order |
//! | `printers.status` | `{"printer":NAME}` | STATUS |
//! | `printers.pause` | `{"printer":NAME}` | STATUS, read again after OctoPrint took the command |
//! | `printers.resume` | `{"printer":NAME}` | the same |
//! | `printers.cancel` | `{"printer":NAME}` | the same |
//!
//! STATUS is `{"printer","state","progress","file","print_time_left_s","message","last_seen"}`,
//! as in `$printers`. On the node that polls, `list` and `status` answer
//! from the last poll; on a standby node they ask OctoPrint. A command is
//! `POST /api/job` (`{"command":"pause","action":"pause"}`,
//! `{"command":"pause","action":"resume"}`, `{"command":"cancel"}`); the
//! state it leads to is broadcast to `$printers` at once, not at the next
//! poll. Refusals are application errors:
//!
//! | code | when |
//! |---|---|
//! | `unknown_printer` | no printer has that name |
//! | `printer_busy` | OctoPrint refused the command in the printer's state (409: idle, not paused, not connected) |
//! | `printer_offline` | OctoPrint cannot be reached, or answered 5xx |
//! | `printer_key_refused` | OctoPrint refused the API key (401, 403) |
//! | `printer_error` | OctoPrint answered another status |

use std::sync::Arc;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::octoprint::{Command, Refusal};
use super::{Inner, PrintersActor};
use crate::handlers::{Rejection, Rpc};

/// The methods this service serves start with this.
pub const PREFIX: &str = "printers.";

/// The `data` of every method but `list`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Which {
    printer: String,
}

impl Handler<Rpc> for PrintersActor {
    type Result = ResponseFuture<Result<Value, Rejection>>;

    /// Answers outside the actor: a printer that is slow to answer holds up
    /// neither the polls nor the other calls.
    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.inner.clone().answer(rpc))
    }
}

impl Inner {
    async fn answer(self: Arc<Self>, rpc: Rpc) -> Result<Value, Rejection> {
        let command = match rpc.action(PREFIX) {
            "list" => return Ok(self.list().await),
            "status" => None,
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "cancel" => Some(Command::Cancel),
            _ => return Err(rpc.unknown()),
        };
        let Which { printer } = rpc.params()?;
        let idx = self.index(&printer).ok_or_else(|| {
            Rejection::new("unknown_printer", format!("no printer named '{printer}'"))
        })?;
        let Some(command) = command else {
            return Ok(self.status(idx, false).await);
        };
        self.octoprint
            .command(&self.device(idx), command)
            .await
            .map_err(|refusal| rejection(&printer, command, refusal))?;
        info!(printer = %printer, user = %rpc.caller.user, command = command.verb(), "printer command sent");
        Ok(self.status(idx, true).await)
    }

    /// Every printer's status, asked concurrently where they are asked.
    async fn list(self: Arc<Self>) -> Value {
        let n = self.settings.devices.len();
        let all = futures::future::join_all((0..n).map(|idx| self.status(idx, false))).await;
        json!({ "printers": all })
    }

    /// Printer `idx`'s status: the last poll's, unless `fresh` is asked or
    /// this node does not poll; then OctoPrint's answer now (recorded and
    /// broadcast on the node that polls).
    async fn status(self: &Arc<Self>, idx: usize, fresh: bool) -> Value {
        let polls = self.lease.held();
        if polls && !fresh {
            if let Some(status) = self.last_status(idx) {
                return status;
            }
        }
        let obs = self.clone().observe(idx).await;
        if polls {
            return self.record(idx, obs);
        }
        let name = self.printers.lock()[idx].config.name.clone();
        let seen = (obs.state != super::PrinterState::Offline).then(crate::clock::now_rfc3339);
        super::status(&name, &obs, seen.as_deref())
    }
}

/// A refused command, as the client's error.
fn rejection(printer: &str, command: Command, refusal: Refusal) -> Rejection {
    let verb = command.verb();
    match refusal {
        Refusal::Conflict => Rejection::new(
            "printer_busy",
            format!("{printer} cannot {verb} in its current state (OctoPrint answered 409)"),
        ),
        Refusal::Key(status) => Rejection::new(
            "printer_key_refused",
            format!("OctoPrint refused the API key of {printer} (HTTP {status})"),
        ),
        Refusal::Unreachable(why) => {
            Rejection::new("printer_offline", format!("{printer} is offline: {why}"))
        }
        Refusal::Status(status) => Rejection::new(
            "printer_error",
            format!("{printer} did not {verb}: OctoPrint answered HTTP {status}"),
        ),
    }
}
