//! The domain services under the `services` supervisor, one actor each:
//!
//! - [`trending`] (a folder: breaker, error, metrics, actor): fetches JSON feeds (retries, circuit breakers, a TTL
//!   cache) and broadcasts changes to `$trending`.
//! - [`printers`]: polls OctoPrint printers and broadcasts state changes to
//!   `$printers`.
//! - [`files`] (a folder: scan, actor): watches directories for print files, indexes them in the
//!   database and broadcasts added / changed / removed to `$files`.
//!
//! Each is always in the tree: with nothing configured it is idle and
//! healthy, and says so in its health details. Each keeps the state that
//! must outlive a crash in its handle, outside the actor, so a restart
//! loses only the work in flight. They broadcast to system rooms (`$...`),
//! which clients may join but never publish to, as the user [`SYSTEM_USER`].

pub mod files;
pub mod printers;
pub mod trending;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tracing::{debug, warn};

use crate::rooms::{RoomError, Rooms};

/// The `from` of every message a service publishes.
pub const SYSTEM_USER: &str = "system";

/// Tries of one broadcast while the room's hub restarts.
const BROADCAST_TRIES: u32 = 5;
/// Pause between those tries.
const BROADCAST_RETRY: Duration = Duration::from_millis(100);

/// Publishes `data` to the system room `room` as [`SYSTEM_USER`], in the
/// background. A hub that is restarting is retried a few times; after that
/// the update is dropped with a warning (the next change is broadcast anew,
/// and the service's own state, e.g. `/health/printers`, stays right).
pub fn broadcast(rooms: &Rooms, room: &'static str, data: &impl Serialize) {
    let raw = match serde_json::value::to_raw_value(data) {
        Ok(raw) => raw,
        Err(e) => {
            warn!(room, error = %e, "cannot serialize a broadcast; dropped");
            return;
        }
    };
    let rooms = rooms.clone();
    actix_rt::spawn(async move {
        let user: Arc<str> = SYSTEM_USER.into();
        for attempt in 1..=BROADCAST_TRIES {
            let data: Box<RawValue> = raw.clone();
            match rooms.publish(room, user.clone(), data).await {
                Ok(position) => {
                    debug!(room, offset = position.offset, "broadcast");
                    return;
                }
                Err(RoomError::Unavailable) if attempt < BROADCAST_TRIES => {
                    tokio::time::sleep(BROADCAST_RETRY).await;
                }
                Err(e) => {
                    warn!(room, error = %e, "broadcast dropped: the room hub did not come back");
                    return;
                }
            }
        }
    });
}

/// An error with its sources, `outer: inner: root`, for a log line or a
/// `last_error` that says what actually happened ("connection refused",
/// "invalid peer certificate: UnknownIssuer"), where the outer error alone
/// says only "error sending request".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
