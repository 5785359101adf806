//! A print farm's backend, as its own binary with every `holdfast`
//! subcommand: the built-in printers service polls the OctoPrint printers of
//! the config file and answers `printers.list`, `printers.pause`,
//! `printers.resume` and `printers.cancel` from any browser; on top of it a
//! farm actor of its own follows the `$printers` feed as a room member and
//! answers `farm.summary` (each printer's latest state and a count per
//! state). `cargo test` runs it end to end against fake OctoPrint servers
//! (`tests/examples.rs`).
//!
//! ```sh
//! cargo run --example printer_farm -- --config farm.toml
//! ```
//!
//! with a `farm.toml` such as
//!
//! ```toml
//! [[printers.devices]]
//! name = "mk4"
//! url = "http://octopi-mk4.local"
//! api_key = "..."
//!
//! # Dashboards want the newest state of each printer, not every step: a
//! # lagging browser keeps one queued $printers message, the latest.
//! [[rooms.namespaces]]
//! prefix = "$printers"
//! slow_consumer = "latest"
//! ```

use std::collections::BTreeMap;

use actix::prelude::*;
use holdfast::actors::rooms::{Inbox, JoinAnswer, Member, RoomEvent, Rooms};
use holdfast::prelude::*;
use holdfast::server::handlers::{Rejection, Rpc, Target};
use serde_json::{json, Value};

/// The feed the printers service publishes to.
const FEED: &str = "$printers";

/// Follows `$printers`; answers `farm.summary`.
struct Farm {
    rooms: Rooms,
    /// Each printer's latest state, by name.
    states: BTreeMap<String, String>,
}

impl Actor for Farm {
    type Context = Context<Self>;

    /// Joins the feed as a member whose inbox is this actor (a restarted
    /// farm joins again under the same session, replacing the old one).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let member = Member {
            session: "printer-farm".into(),
            user: "printer-farm".into(),
            inbox: Inbox::Actor(ctx.address().recipient()),
        };
        let joined = self.rooms.join(
            FEED,
            member,
            JoinAnswer {
                id: None,
                data: None,
            },
        );
        ctx.spawn(
            async move {
                if let Err(e) = joined.await {
                    tracing::warn!(error = %e, "the farm could not follow {FEED}");
                }
            }
            .into_actor(self),
        );
    }
}

impl Child for Farm {
    fn health(&mut self, _: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy().with("printers", self.states.len()).into()
    }
}

impl Handler<RoomEvent> for Farm {
    type Result = ();

    /// A `$printers` message: `{"printer", "state", ...}`.
    fn handle(&mut self, event: RoomEvent, _: &mut Context<Self>) {
        let RoomEvent::Message { frame, .. } = event else {
            return;
        };
        let Ok(message) = serde_json::from_str::<Value>(&frame) else {
            return;
        };
        let data = &message["data"];
        if let (Some(printer), Some(state)) = (data["printer"].as_str(), data["state"].as_str()) {
            self.states.insert(printer.to_owned(), state.to_owned());
        }
    }
}

impl Handler<Rpc> for Farm {
    type Result = Result<Value, Rejection>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        match rpc.action("farm.") {
            "summary" => {
                let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
                for state in self.states.values() {
                    *by_state.entry(state).or_default() += 1;
                }
                Ok(json!({"printers": self.states, "by_state": by_state}))
            }
            _ => Err(rpc.unknown()),
        }
    }
}

fn main() {
    std::process::exit(holdfast::server::cli::run(|settings| {
        Builder::new(settings).mount(|mount| {
            let rooms = mount.context().rooms().clone();
            let spec = ChildSpec::new("farm", move |_| Farm {
                rooms: rooms.clone(),
                states: BTreeMap::new(),
            });
            mount
                .rpc("farm.", Target::of(spec.child_ref()))?
                .service(spec);
            Ok(())
        })
    }));
}
