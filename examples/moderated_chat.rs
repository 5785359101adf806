//! A moderated chat, as its own binary with every `holdfast` subcommand:
//! a room handler for the `chat:` rooms refuses messages with a banned word
//! (read from the `[app]` table of the config file) and trims the rest,
//! welcomes joiners with the room's rules, and stores every message it lets
//! through in the database (through Holdfast's pool, SQLite or
//! PostgreSQL); RPC methods answer how many it let through and a room's
//! latest stored messages. Members see each other come and go
//! (`presence_events`) and read what they missed with `history`.
//! `cargo test` runs it end to end (`tests/examples.rs`).
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
//! presence_events = true
//!
//! [app]
//! banned_words = ["spam", "scam"]
//! ```

use actix::prelude::*;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use holdfast::actors::db::{Db, DbError};
use holdfast::prelude::*;
use holdfast::server::handlers::{
    Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection, RoomHandler, Rpc, Target,
};
use serde_json::{json, Value};

diesel::table! {
    /// What the moderator let through.
    chat_messages (id) {
        id -> Text,
        room -> Text,
        user_id -> Text,
        body -> Text,
        at_ms -> BigInt,
    }
}

/// The same statement on both backends.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS chat_messages (\
    id TEXT PRIMARY KEY, room TEXT NOT NULL, user_id TEXT NOT NULL, \
    body TEXT NOT NULL, at_ms BIGINT NOT NULL)";

/// Most messages `moderation.recent` answers.
const RECENT: i64 = 20;

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
    db: Db,
}

impl Actor for Moderator {
    type Context = Context<Self>;

    /// Creates its table before it takes any request.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        ctx.wait(
            async move {
                let created: Result<usize, DbError> = async {
                    Ok(holdfast::actors::with_conn!(db, |conn| {
                        diesel::sql_query(CREATE_TABLE).execute(conn).await?
                    }))
                }
                .await;
                if let Err(e) = created {
                    tracing::warn!(error = %e, "chat_messages not created; messages are not stored");
                }
            }
            .into_actor(self),
        );
    }
}

/// Stores one message; a failure is logged (the message was broadcast).
async fn store(db: Db, room: String, user: String, body: String) {
    let at = holdfast::actors::clock::now_unix_ms();
    let row = (
        chat_messages::id.eq(format!("{user}-{}", unix_ns())),
        chat_messages::room.eq(room),
        chat_messages::user_id.eq(user),
        chat_messages::body.eq(body),
        chat_messages::at_ms.eq(at),
    );
    let stored: Result<usize, DbError> = async {
        Ok(holdfast::actors::with_conn!(db, |conn| {
            diesel::insert_into(chat_messages::table)
                .values(row.clone())
                .execute(conn)
                .await?
        }))
    }
    .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, "a chat message was not stored");
    }
}

/// Nanoseconds since the Unix epoch: with the user, a message's id.
fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The latest stored messages of `room`, newest last.
async fn recent(db: Db, room: String) -> Result<Value, Rejection> {
    let rows: Result<Vec<(String, String, i64)>, DbError> = async {
        Ok(holdfast::actors::with_conn!(db, |conn| {
            chat_messages::table
                .filter(chat_messages::room.eq(&room))
                .order(chat_messages::at_ms.desc())
                .limit(RECENT)
                .select((
                    chat_messages::user_id,
                    chat_messages::body,
                    chat_messages::at_ms,
                ))
                .load(conn)
                .await?
        }))
    }
    .await;
    let mut rows = rows.map_err(|e| Rejection::unavailable(e.to_string()))?;
    rows.reverse();
    let messages: Vec<Value> = rows
        .into_iter()
        .map(|(user, body, at)| json!({"user": user, "body": body, "at_ms": at}))
        .collect();
    Ok(json!({ "room": room, "messages": messages }))
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

    fn handle(&mut self, req: PublishRequest, ctx: &mut Context<Self>) -> Self::Result {
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
        let body = text.trim().to_owned();
        let store = store(
            self.db.clone(),
            req.room,
            req.caller.user.to_string(),
            body.clone(),
        );
        ctx.spawn(store.into_actor(self));
        Ok(Accept::With(json!(body)))
    }
}

impl Handler<LeaveNotice> for Moderator {
    type Result = ();

    fn handle(&mut self, _: LeaveNotice, _: &mut Context<Self>) {}
}

/// `moderation.recent`'s `data`.
#[derive(serde::Deserialize)]
struct RecentParams {
    room: String,
}

impl Handler<Rpc> for Moderator {
    type Result = ResponseFuture<Result<Value, Rejection>>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        let answer = match rpc.action("moderation.") {
            "stats" => Ok(json!({"passed": self.passed})),
            "recent" => match rpc.params::<RecentParams>() {
                Ok(RecentParams { room }) => return Box::pin(recent(self.db.clone(), room)),
                Err(refused) => Err(refused),
            },
            _ => Err(rpc.unknown()),
        };
        Box::pin(std::future::ready(answer))
    }
}

fn main() {
    std::process::exit(holdfast::server::cli::run(|settings| {
        Builder::new(settings).mount(|mount| {
            // A bad `[app]` table is a config error naming its key (exit 64).
            let chat: ChatSettings = mount.context().settings().app()?;
            let db = mount.context().db().clone();
            let spec = ChildSpec::new("moderator", move |_| Moderator {
                settings: chat.clone(),
                passed: 0,
                db: db.clone(),
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
