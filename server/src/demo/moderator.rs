//! The demo's moderator: the room handler of `demo:moderated`. It refuses
//! messages with a banned word (`banned_word`, nothing broadcast, no offset
//! taken), trims and shortens the rest, and tells joiners the rules.
//!
//! Owns: its counts. Restart policy: permanent, non-critical, under
//! `services`. Lost on a crash: the counts.

use actix::prelude::*;
use serde::Deserialize;
use serde_json::json;

use holdfast_actors::handlers::{Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection};
use holdfast_actors::health::{Health, HealthReply};
use holdfast_actors::supervision::{Child, ChildSpec};

/// Words the moderator refuses.
const BANNED: &[&str] = &["spam", "scam"];
/// Longest text it lets through, in characters.
const MAX_CHARS: usize = 500;

/// See the module docs.
#[derive(Default)]
pub struct Moderator {
    passed: u64,
    refused: u64,
}

impl Moderator {
    /// Its spec: `demo-moderator`, non-critical.
    pub fn spec() -> ChildSpec<Moderator> {
        ChildSpec::new("demo-moderator", |_| Moderator::default()).critical(false)
    }
}

impl Actor for Moderator {
    type Context = Context<Self>;
}

impl Child for Moderator {
    fn health(&mut self, _: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy()
            .with("passed", self.passed)
            .with("refused", self.refused)
            .into()
    }
}

/// A demo chat message.
#[derive(Deserialize)]
struct ChatMessage {
    text: String,
    #[serde(default)]
    name: Option<String>,
}

impl Handler<JoinRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, _: JoinRequest, _: &mut Context<Self>) -> Self::Result {
        Ok(Accept::With(json!({
            "rules": format!("moderated: messages with {} are refused", BANNED.join(" or ")),
        })))
    }
}

impl Handler<PublishRequest> for Moderator {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, req: PublishRequest, _: &mut Context<Self>) -> Self::Result {
        let message: ChatMessage = req.parse()?;
        let lower = message.text.to_lowercase();
        if let Some(word) = BANNED.iter().find(|w| lower.contains(*w)) {
            self.refused += 1;
            return Err(Rejection::new(
                "banned_word",
                format!("'{word}' is not allowed in {}", req.room),
            ));
        }
        self.passed += 1;
        let text: String = message.text.trim().chars().take(MAX_CHARS).collect();
        Ok(Accept::With(json!({"text": text, "name": message.name})))
    }
}

impl Handler<LeaveNotice> for Moderator {
    type Result = ();

    fn handle(&mut self, _: LeaveNotice, _: &mut Context<Self>) {}
}
