//! The wire protocol of `docs/PROTOCOL.md`, in one module: close codes,
//! error codes, limits, [`ClientFrame`] (every client frame is parsed and
//! checked here, and nowhere else) and [`ServerFrame`] (every server frame
//! but `message` is built here).
//!
//! The `message` frame is the one exception, on purpose: it is built once
//! per publish by the room hub that assigns its offset
//! (`holdfast_actors::rooms::message_frame`), and those bytes go to every
//! member on every node. A test below holds that encoder to the same shape as
//! the frames here.
//!
//! Parsing names the field that is wrong in every `bad_request`: a frame is
//! first read into its raw fields (each field once, as the JSON type it has),
//! then each field is checked against what the frame's `type` needs.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use holdfast_actors::rooms::{HistoryMessage, PresenceEntry};

/// Close codes (PROTOCOL.md). 1001 and 1013 ask the client to reconnect and
/// `resume`; 1008 and 1009 mean it must change what it sends first.
pub mod close {
    /// The client asked.
    pub const NORMAL: u16 = 1000;
    /// Server shutting down: reconnect (with `resume`) after a back-off.
    pub const GOING_AWAY: u16 = 1001;
    /// Not a WebSocket the protocol allows (e.g. a malformed frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
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
    /// A subsystem is down or restarting (a handler included); safe to retry.
    pub const UNAVAILABLE: &str = "unavailable";
    /// No handler serves that RPC method.
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    /// A handler did not answer within its deadline; the request may or may
    /// not have taken effect.
    pub const TIMEOUT: &str = "timeout";
}

/// The `unavailable` message while a room hub restarts.
pub(super) const RESTARTING: &str = "the room service is restarting; retry";

/// Longest room name, in bytes.
pub(crate) const MAX_ROOM_BYTES: usize = 128;
/// Most rooms one `resume` may name.
pub(super) const MAX_RESUME_ROOMS: usize = 1024;
/// `history`'s `limit` when absent, and its largest value.
const HISTORY_LIMIT: (usize, usize) = (100, 1000);
/// Longest RPC method name, in bytes.
const MAX_METHOD_BYTES: usize = 128;
/// Deepest nesting of arrays and objects in `data`.
pub(crate) const MAX_DATA_DEPTH: usize = 64;

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

/// 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_method(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= MAX_METHOD_BYTES
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether the JSON text `json` (valid JSON) nests arrays and objects at
/// most `max` deep. A scan of the bytes, skipping strings: no parse.
pub fn nesting_within(json: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A request id: an integer or a string, echoed in the reply.
pub type Id = Value;

/// A client frame, parsed and checked (PROTOCOL.md, "Client → server").
/// Checks that depend on who sent it (token claims, membership, limits of
/// this server) are the session's.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    /// `join`: become a member of `room`.
    Join {
        /// A valid room name.
        room: String,
    },
    /// `leave`: stop being a member of `room`.
    Leave {
        /// A valid room name.
        room: String,
    },
    /// `publish`: `data` (any JSON, `null` included, kept as sent) to `room`.
    Publish {
        /// A valid room name.
        room: String,
        /// The body, byte for byte as the client sent it.
        data: &'a RawValue,
    },
    /// `presence`: who is in `room`.
    Presence {
        /// A valid room name.
        room: String,
    },
    /// `resume`: take over `session` and replay what followed each offset.
    Resume {
        /// The session to resume.
        session: String,
        /// The rooms to re-join, each with the last offset seen and the
        /// epoch the client saw it in (if it sent one).
        rooms: Vec<ResumeRoom>,
    },
    /// `ping`: answered `pong`.
    Ping,
    /// `history`: the messages of `room` after `since`, at most `limit`.
    History {
        /// A valid room name.
        room: String,
        /// Messages after this offset (default 0).
        since: u64,
        /// At most this many (default 100; larger asks get 1000).
        limit: usize,
    },
    /// `rpc`: a request answered by the handler of `method` (the `id` is
    /// required).
    Rpc {
        /// A valid method name.
        method: String,
        /// The request's `data`; `None` when absent (the handler gets `null`).
        data: Option<&'a RawValue>,
    },
}

/// One room of a `resume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRoom {
    /// A valid room name.
    pub room: String,
    /// The last offset the client saw.
    pub after: u64,
    /// The epoch the client saw, if it sent one.
    pub epoch: Option<String>,
}

/// A frame refused before it reached any subsystem: the `error` to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The request id, when the frame had a valid one.
    pub id: Option<Id>,
    /// `bad_request` or `invalid_room`.
    pub code: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

/// A frame's fields as JSON, each read once; the scratch of [`ClientFrame::parse`].
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    id: Option<Value>,
    room: Option<Value>,
    /// `Some` whenever the key is present, `null` included.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    session: Option<Value>,
    rooms: Option<Value>,
    epochs: Option<Value>,
    method: Option<Value>,
    since: Option<Value>,
    limit: Option<Value>,
}

/// A field that is present, whatever its value: `Option<T>` alone reads
/// `null` as absent, which would refuse `"data": null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// An `id` is an integer or a string.
fn valid_id(id: Option<Value>) -> Option<Id> {
    id.filter(|v| v.is_string() || v.is_i64() || v.is_u64())
}

impl<'a> ClientFrame<'a> {
    /// Whether the session answers it only after a room hub (or the
    /// session store) did: all but `ping`.
    pub fn waits_on_hub(&self) -> bool {
        !matches!(self, Self::Ping)
    }

    /// Parses one text frame into its id and the frame.
    ///
    /// # Errors
    /// [`Refused`] naming what is wrong: not JSON, not an object, a bad `id`
    /// or `type`, a missing or ill-typed field (`bad_request`), a room name
    /// outside the protocol's rules (`invalid_room`).
    pub fn parse(text: &'a str) -> Result<(Option<Id>, Self), Refused> {
        let mut fields: Fields<'a> = serde_json::from_str(text).map_err(|e| {
            let message = if e.is_data() {
                "a frame must be a JSON object".to_owned()
            } else {
                format!("not JSON: {e}")
            };
            bad(None, message)
        })?;
        let id = match fields.id.take() {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                valid_id(Some(v))
                    .ok_or_else(|| bad(None, "`id` must be an integer or a string"))?,
            ),
        };
        let frame = Self::from_fields(fields).map_err(|mut refused| {
            refused.id.clone_from(&id);
            refused
        })?;
        if matches!(frame, Self::Rpc { .. }) && id.is_none() {
            return Err(bad(None, "an `rpc` needs an `id` (an integer or a string)"));
        }
        Ok((id, frame))
    }

    fn from_fields(f: Fields<'a>) -> Result<Self, Refused> {
        let Some(kind) = f.kind.as_ref().and_then(Value::as_str) else {
            return Err(bad(None, "missing string field `type`"));
        };
        Ok(match kind {
            "ping" => Self::Ping,
            "join" => Self::Join {
                room: room_field(f.room)?,
            },
            "leave" => Self::Leave {
                room: room_field(f.room)?,
            },
            "presence" => Self::Presence {
                room: room_field(f.room)?,
            },
            "publish" => Self::Publish {
                room: room_field(f.room)?,
                data: f.data.ok_or_else(|| bad(None, "missing field `data`"))?,
            },
            "resume" => resume_fields(f.session, f.rooms, f.epochs)?,
            "history" => Self::History {
                room: room_field(f.room)?,
                since: count_field("since", f.since)?.unwrap_or(0),
                limit: count_field("limit", f.limit)?.map_or(HISTORY_LIMIT.0, |l| {
                    usize::try_from(l)
                        .unwrap_or(usize::MAX)
                        .min(HISTORY_LIMIT.1)
                }),
            },
            "rpc" => Self::Rpc {
                method: method_field(f.method)?,
                data: f.data.filter(|d| d.get() != "null"),
            },
            other => {
                let other: String = other.chars().take(64).collect();
                return Err(bad(None, format!("unknown type '{other}'")));
            }
        })
    }
}

fn bad(id: Option<Id>, message: impl Into<String>) -> Refused {
    Refused {
        id,
        code: code::BAD_REQUEST,
        message: message.into(),
    }
}

fn invalid_room(message: impl Into<String>) -> Refused {
    Refused {
        id: None,
        code: code::INVALID_ROOM,
        message: message.into(),
    }
}

/// The `room` field: a string that is a valid room name.
fn room_field(room: Option<Value>) -> Result<String, Refused> {
    let Some(Value::String(room)) = room else {
        return Err(bad(None, "missing string field `room`"));
    };
    if !valid_room(&room) {
        return Err(invalid_room(
            "a room name is 1 to 128 bytes of [A-Za-z0-9_.:-], optionally after a leading '$'",
        ));
    }
    Ok(room)
}

/// An optional non-negative integer field.
fn count_field(name: &str, value: Option<Value>) -> Result<Option<u64>, Refused> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(None, format!("`{name}` must be a non-negative integer"))),
    }
}

/// The `method` field: a string that is a valid method name.
fn method_field(method: Option<Value>) -> Result<String, Refused> {
    let Some(Value::String(method)) = method else {
        return Err(bad(None, "missing string field `method`"));
    };
    if !valid_method(&method) {
        return Err(bad(
            None,
            "`method` must be 1 to 128 bytes of [A-Za-z0-9_.:-]",
        ));
    }
    Ok(method)
}

/// The fields of a `resume`: `session`, `rooms` (`{room: last_offset}`) and
/// the optional `epochs` (`{room: epoch}`).
fn resume_fields<'a>(
    session: Option<Value>,
    rooms: Option<Value>,
    epochs: Option<Value>,
) -> Result<ClientFrame<'a>, Refused> {
    let Some(Value::String(session)) = session else {
        return Err(bad(None, "missing string field `session`"));
    };
    let Some(Value::Object(rooms)) = rooms else {
        return Err(bad(
            None,
            "missing object field `rooms` ({room: last_offset_seen})",
        ));
    };
    if rooms.len() > MAX_RESUME_ROOMS {
        return Err(bad(
            None,
            format!("at most {MAX_RESUME_ROOMS} rooms per resume"),
        ));
    }
    let epochs = match epochs {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(e)) => e,
        Some(_) => return Err(bad(None, "`epochs` must be an object {room: epoch}")),
    };
    let mut wanted = Vec::with_capacity(rooms.len());
    for (room, offset) in rooms {
        let Some(after) = offset.as_u64() else {
            return Err(bad(
                None,
                format!("rooms.{room} must be a non-negative integer offset"),
            ));
        };
        if !valid_room(&room) {
            return Err(invalid_room(format!("'{room}' is not a valid room name")));
        }
        let epoch = match epochs.get(&room) {
            None | Some(Value::Null) => None,
            Some(Value::String(e)) => Some(e.clone()),
            Some(_) => return Err(bad(None, format!("epochs.{room} must be a string"))),
        };
        wanted.push(ResumeRoom { room, after, epoch });
    }
    Ok(ClientFrame::Resume {
        session,
        rooms: wanted,
    })
}

/// A server frame other than `message` (PROTOCOL.md, "Server → client").
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// Right after the upgrade.
    Welcome {
        /// The session id, for `resume`.
        session: &'a str,
        /// The user id.
        user: &'a str,
        /// The protocol ping interval.
        heartbeat_ms: u64,
        /// The largest frame the server reads.
        max_frame_bytes: usize,
    },
    /// The answer to `join`.
    Joined {
        /// The room.
        room: &'a str,
        /// Its latest offset.
        offset: u64,
        /// Its epoch.
        epoch: &'a str,
        /// What the room's handler answered with the join, if anything.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    /// The room's epoch changed while the client was a member (PROTOCOL.md,
    /// "Epoch changes while attached"); the next message has `offset + 1`.
    Epoch {
        /// The room.
        room: &'a str,
        /// The new epoch.
        epoch: &'a str,
        /// The offset the next message follows.
        offset: u64,
    },
    /// The answer to `leave`.
    Left {
        /// The room.
        room: &'a str,
    },
    /// The answer to `publish`: the message holds `offset`.
    Ack {
        /// The room.
        room: &'a str,
        /// The message's offset.
        offset: u64,
    },
    /// The answer to `presence`.
    Presence {
        /// The room.
        room: &'a str,
        /// One line per user.
        members: &'a [PresenceEntry],
    },
    /// The answer to `resume`, after the replayed messages.
    Resumed {
        /// The session, now this connection's.
        session: &'a str,
        /// Per room: what was replayed.
        rooms: &'a BTreeMap<String, Replay>,
    },
    /// The answer to `ping`.
    Pong,
    /// The answer to `history`.
    History {
        /// The room.
        room: &'a str,
        /// The epoch the offsets belong to.
        epoch: &'a str,
        /// Oldest first.
        messages: &'a [HistoryMessage],
        /// Whether history reached back to `since + 1`.
        complete: bool,
    },
    /// The answer to `rpc`: the handler's `data`.
    Reply {
        /// What the handler answered.
        data: &'a Value,
    },
    /// A request failed; the connection stays open.
    Error {
        /// One of [`code`].
        code: &'a str,
        /// What went wrong, for people.
        message: &'a str,
    },
    /// Before a graceful shutdown closes the socket.
    Draining {
        /// When to come back (with `resume`).
        reconnect_after_ms: u64,
    },
}

/// What `resume` replayed in one room.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Replay {
    /// How many messages were replayed.
    pub replayed: u64,
    /// Whether history reached back to the client's offset in its epoch.
    pub complete: bool,
    /// The room's epoch.
    pub epoch: String,
}

/// A server frame with the request's `id`, when it had one.
#[derive(Serialize)]
struct WithId<'a> {
    #[serde(flatten)]
    frame: &'a ServerFrame<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Id>,
}

impl ServerFrame<'_> {
    /// The frame's JSON text, with `id` when the request had one.
    pub fn encode(&self, id: Option<&Id>) -> String {
        // Serializing these types cannot fail: every map key is a string and
        // no value is a float that JSON cannot hold.
        serde_json::to_string(&WithId { frame: self, id }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<(Option<Id>, ClientFrame<'_>), Refused> {
        ClientFrame::parse(text)
    }

    fn refused(text: &str) -> (Option<Id>, &'static str, String) {
        let r = parse(text).expect_err(text);
        (r.id, r.code, r.message)
    }

    #[test]
    fn room_names_follow_the_protocol() {
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

    #[test]
    fn data_null_is_a_publish_and_only_a_missing_data_is_refused() {
        let (id, frame) = parse(r#"{"type":"publish","room":"r","data":null,"id":1}"#).unwrap();
        assert_eq!(id, Some(json!(1)));
        let ClientFrame::Publish { room, data } = frame else {
            panic!("not a publish: {frame:?}");
        };
        assert_eq!((room.as_str(), data.get()), ("r", "null"));
        let (id, code, message) = refused(r#"{"type":"publish","room":"r","id":2}"#);
        assert_eq!((id, code), (Some(json!(2)), code::BAD_REQUEST));
        assert!(message.contains("`data`"), "{message}");
    }

    #[test]
    fn data_is_kept_byte_for_byte() {
        let text =
            r#"{"type":"publish","room":"r","data":{"b":1.50,"a":123456789012345678901234567890}}"#;
        let (_, frame) = parse(text).unwrap();
        let ClientFrame::Publish { data, .. } = frame else {
            panic!("not a publish");
        };
        assert_eq!(
            data.get(),
            r#"{"b":1.50,"a":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn every_refusal_names_the_field_that_is_wrong() {
        for (text, field) in [
            (r#"{"id":2}"#, "`type`"),
            (r#"{"type":7}"#, "`type`"),
            (r#"{"type":"join"}"#, "`room`"),
            (r#"{"type":"join","room":5}"#, "`room`"),
            (r#"{"type":"ping","id":{"x":1}}"#, "`id`"),
            (r#"{"type":"resume"}"#, "`session`"),
            (r#"{"type":"resume","session":"s"}"#, "`rooms`"),
            (
                r#"{"type":"resume","session":"s","rooms":{"a":-1}}"#,
                "rooms.a",
            ),
            (
                r#"{"type":"resume","session":"s","rooms":{"a":1},"epochs":3}"#,
                "`epochs`",
            ),
            (
                r#"{"type":"resume","session":"s","rooms":{"a":1},"epochs":{"a":1}}"#,
                "epochs.a",
            ),
        ] {
            let (_, code, message) = refused(text);
            assert_eq!(code, code::BAD_REQUEST, "{text}");
            assert!(message.contains(field), "{text} -> {message}");
        }
        assert_eq!(refused(r#"{"type":"dance","id":"x"}"#).0, Some(json!("x")));
        assert_eq!(refused("[1]").2, "a frame must be a JSON object");
        assert!(refused("nope").2.starts_with("not JSON"));
    }

    #[test]
    fn bad_room_names_are_invalid_room() {
        let (id, code, _) = refused(r#"{"type":"join","room":"a b","id":3}"#);
        assert_eq!((id, code), (Some(json!(3)), code::INVALID_ROOM));
        let (_, code, message) = refused(r#"{"type":"resume","session":"s","rooms":{"a/b":0}}"#);
        assert_eq!(code, code::INVALID_ROOM);
        assert!(message.contains("a/b"), "{message}");
    }

    #[test]
    fn resume_reads_offsets_and_epochs() {
        let (_, frame) =
            parse(r#"{"type":"resume","session":"s","rooms":{"a":3,"b":0},"epochs":{"a":"e1"}}"#)
                .unwrap();
        let ClientFrame::Resume { session, rooms } = frame else {
            panic!("not a resume: {frame:?}");
        };
        assert_eq!(session, "s");
        assert_eq!(
            rooms,
            vec![
                ResumeRoom {
                    room: "a".into(),
                    after: 3,
                    epoch: Some("e1".into())
                },
                ResumeRoom {
                    room: "b".into(),
                    after: 0,
                    epoch: None
                },
            ]
        );
    }

    #[test]
    fn server_frames_carry_their_type_first_and_the_id_when_given() {
        let id = json!(7);
        assert_eq!(
            ServerFrame::Pong.encode(Some(&id)),
            r#"{"type":"pong","id":7}"#
        );
        assert_eq!(
            ServerFrame::Ack {
                room: "r",
                offset: 3
            }
            .encode(None),
            r#"{"type":"ack","room":"r","offset":3}"#
        );
        let err = ServerFrame::Error {
            code: code::NOT_MEMBER,
            message: "join \"r\" first",
        }
        .encode(Some(&json!("a")));
        assert_eq!(
            serde_json::from_str::<Value>(&err).unwrap(),
            json!({"type": "error", "code": "not_member", "message": "join \"r\" first", "id": "a"})
        );
    }

    /// The hub's `message` encoder and the frames here agree on the shape:
    /// `type` first, then `room`, `offset`, `from`, `data`, escaped as JSON.
    #[test]
    fn the_message_frame_matches_the_protocol() {
        let data = RawValue::from_string(r#"{"x":[1,null]}"#.into()).unwrap();
        let frame = holdfast_actors::rooms::message_frame("r\"1", 42, "u\n", &data);
        assert_eq!(
            &*frame,
            r#"{"type":"message","room":"r\"1","offset":42,"from":"u\n","data":{"x":[1,null]}}"#
        );
    }
}
