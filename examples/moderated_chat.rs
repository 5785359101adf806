//! A moderated chat, as its own binary with every `holdfast` subcommand:
//! a room handler for the `chat:` rooms refuses messages with a banned word
//! (read from the `[app]` table of the config file) and trims the rest,
//! welcomes joiners with the room's rules, and an RPC method answers how
//! many messages it let through. `cargo test` runs it end to end
//! (`tests/examples.rs`).
//!
//! ```sh
//! cargo run --example moderated_chat -- --config chat.toml
//! ```
//!
//! with a `chat.toml` such as
//!
//! ```toml
//! [[rooms.namespaces]]
//! prefix = "chat:"
//! handler = "moderator"
//!
//! [app]
//! banned_words = ["spam", "scam"]
//! ```

use actix::prelude::*;
use holdfast::prelude::*;
use holdfast::server::handlers::{
    Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection, RoomHandler, Rpc, Target,
};
use serde_json::{json, Value};

/// The `[app]` table.
#[derive(serde::Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct ChatSettings {
    #[serde(default)]
    banned_words: Vec<String>,
}

/// Decides on joins and publishes in `chat:` rooms.
struct Moderator {
    settings: ChatSettings,
    passed: u64,
}

impl Actor for Moderator {
    type Context = Context<Self>;
}

impl Child for Moderator {
    fn health(&mut self, _: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy().with("passed", self.passed).into()
    }
}

impl Handler<JoinRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, req: JoinRequest, _: &mut Context<Self>) -> Self::Result {
        Ok(Accept::With(json!({
            "rules": "no banned words",
            "room": req.room,
        })))
    }
}

impl Handler<PublishRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, req: PublishRequest, _: &mut Context<Self>) -> Self::Result {
        let text: String = req.parse()?;
        let lower = text.to_lowercase();
        if let Some(word) = self
            .settings
            .banned_words
            .iter()
            .find(|w| lower.contains(w.as_str()))
        {
            return Err(Rejection::new(
                "banned_word",
                format!("'{word}' is not allowed here"),
            ));
        }
        self.passed += 1;
        Ok(Accept::With(json!(text.trim())))
    }
}

impl Handler<LeaveNotice> for Moderator {
    type Result = ();

    fn handle(&mut self, _: LeaveNotice, _: &mut Context<Self>) {}
}

impl Handler<Rpc> for Moderator {
    type Result = Result<Value, Rejection>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        match rpc.action("moderation.") {
            "stats" => Ok(json!({"passed": self.passed})),
            other => Err(Rejection::new(
                "no_such_action",
                format!("no action '{other}'"),
            )),
        }
    }
}

fn main() {
    std::process::exit(holdfast::server::cli::run(|settings| {
        Builder::new(settings).mount(|mount| {
            // A bad `[app]` table is a config error naming its key (exit 64).
            let chat: ChatSettings = mount.context().settings().app()?;
            let spec = ChildSpec::new("moderator", move |_| Moderator {
                settings: chat.clone(),
                passed: 0,
            });
            let moderator = spec.child_ref();
            mount
                .room_handler("moderator", RoomHandler::of(moderator.clone()))?
                .rpc("moderation.", Target::of(moderator))?
                .service(spec);
            Ok(())
        })
    }));
}
