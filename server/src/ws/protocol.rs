//! The wire protocol's names: close codes, error codes, limits, and the
//! loosely typed request a client frame is parsed into.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Close codes (PROTOCOL.md). 1001 and 1013 ask the client to reconnect and
/// `resume`; 1008 and 1009 mean it must change what it sends first.
pub mod close {
    /// The client asked.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down: reconnect (with `resume`) after a back-off.
    pub const GOING_AWAY: u16 = 1001;
    /// Not a WebSocket the protocol allows (e.g. a malformed frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Policy: token expired mid-session, or repeated rate-limit abuse.
    pub const POLICY: u16 = 1008;
    /// A frame over `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Slow consumer: the outbound queue overflowed; reconnect and `resume`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The connection ended without a close frame (heartbeat timeout, lost client).
    pub const ABNORMAL: u16 = 1006;
}

/// Error codes of `error` frames (PROTOCOL.md). Only `unavailable` and
/// `rate_limited` are worth retrying as is.
pub mod code {
    /// Not JSON, not an object, unknown `type`, missing or ill-typed field.
    pub const BAD_REQUEST: &str = "bad_request";
    /// Room name empty, over 128 bytes, or outside `[A-Za-z0-9_.:-]`.
    pub const INVALID_ROOM: &str = "invalid_room";
    /// Publish to a room the session has not joined.
    pub const NOT_MEMBER: &str = "not_member";
    /// The token's claims do not allow the room, or a read-only system room.
    pub const FORBIDDEN: &str = "forbidden";
    /// Over the per-connection rate; the frame was dropped.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// `data` over the configured limit.
    pub const TOO_LARGE: &str = "too_large";
    /// A binary frame.
    pub const UNSUPPORTED: &str = "unsupported";
    /// A subsystem is down or restarting; safe to retry.
    pub const UNAVAILABLE: &str = "unavailable";
}

/// The `unavailable` message while a room hub restarts.
pub(super) const RESTARTING: &str = "the room service is restarting; retry";

/// Longest room name, in bytes.
pub(super) const MAX_ROOM_BYTES: usize = 128;
/// Most rooms one `resume` may name.
pub(super) const MAX_RESUME_ROOMS: usize = 1024;
/// The fields a client frame may carry; all loosely typed, checked by hand
/// so that every mistake gets a precise `bad_request`.
#[derive(Deserialize)]
pub(super) struct Request<'a> {
    #[serde(rename = "type")]
    pub(super) kind: Option<Value>,
    pub(super) id: Option<Value>,
    pub(super) room: Option<Value>,
    #[serde(borrow)]
    pub(super) data: Option<&'a RawValue>,
    pub(super) session: Option<Value>,
    pub(super) rooms: Option<Value>,
    pub(super) epochs: Option<Value>,
}

/// Just the `id`, to echo it on a rate-limited frame.
#[derive(Deserialize)]
pub(super) struct IdOnly {
    pub(super) id: Option<Value>,
}

/// An `id` is an integer or a string.
pub(super) fn valid_id(id: Option<Value>) -> Option<Value> {
    id.filter(|v| v.is_string() || v.is_i64() || v.is_u64())
}

/// 1 to 128 bytes of `[A-Za-z0-9_.:-]`, optionally after a leading `$`
/// (system rooms, read-only for clients).
pub fn valid_room(room: &str) -> bool {
    let name = room.strip_prefix('$').unwrap_or(room);
    !name.is_empty()
        && room.len() <= MAX_ROOM_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::valid_room;

    #[test]
    pub(super) fn room_names_follow_the_protocol() {
        assert!(valid_room("lobby"));
        assert!(valid_room("a.b:c-d_e"));
        assert!(valid_room("$trending"));
        assert!(valid_room(&"x".repeat(128)));
        assert!(!valid_room(""));
        assert!(!valid_room("$"));
        assert!(!valid_room(&"x".repeat(129)));
        assert!(!valid_room("has space"));
        assert!(!valid_room("a/b"));
        assert!(!valid_room("é"));
    }
}
