//! The one encoder of the `message` frame, and its reader for history.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The one encoder of the `message` frame (PROTOCOL.md): built once per
/// publish, and every member on every node gets these bytes.
pub fn message_frame(room: &str, offset: u64, user: &str, data: &RawValue) -> ByteString {
    let room = serde_json::to_string(room).unwrap_or_default();
    let user = serde_json::to_string(user).unwrap_or_default();
    let data = data.get();
    let mut s = String::with_capacity(48 + room.len() + user.len() + data.len());
    s.push_str(r#"{"type":"message","room":"#);
    s.push_str(&room);
    s.push_str(r#","offset":"#);
    s.push_str(itoa::Buffer::new().format(offset));
    s.push_str(r#","from":"#);
    s.push_str(&user);
    s.push_str(r#","data":"#);
    s.push_str(data);
    s.push('}');
    ByteString::from(s)
}

/// One message of history as the `history` reply lists it:
/// `{"offset","from","data"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// Its offset.
    pub offset: u64,
    /// Who published it.
    pub from: String,
    /// Its body, as published.
    pub data: Box<RawValue>,
}

impl HistoryMessage {
    /// Reads a frame built by [`message_frame`] (its other fields are ignored).
    pub fn from_frame(frame: &str) -> Option<Self> {
        serde_json::from_str(frame).ok()
    }
}
