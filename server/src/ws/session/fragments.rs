//! [`Fragments`]: a message sent in fragments (RFC 6455 §5.4), reassembled
//! into the one text frame it is (PROTOCOL.md, "Additions to v1"). The
//! codec checks the order of fragments (a new message inside one, a
//! continuation outside one: 1002); this bounds the whole message by
//! `max_frame_bytes` (1009) and checks that text is UTF-8 (1007).

use actix_http::ws::Item;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// The message being received in fragments, if any.
#[derive(Default)]
pub(crate) enum Fragments {
    #[default]
    None,
    /// Text so far.
    Text(BytesMut),
    /// A binary message (unsupported), its bytes so far.
    Binary(usize),
}

/// What a fragment completed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// More fragments to come.
    Pending,
    /// A whole text message.
    Text(ByteString),
    /// A whole binary message (answered `unsupported`).
    Binary,
    /// The message is over `max_frame_bytes` so far: 1009.
    TooBig,
    /// The text is not UTF-8: 1007.
    NotUtf8,
}

impl Fragments {
    /// Takes the next fragment; `max` bounds the whole message.
    pub(crate) fn push(&mut self, item: Item, max: usize) -> Assembled {
        let (data, last) = match item {
            Item::FirstText(data) => {
                *self = Fragments::Text(BytesMut::new());
                (data, false)
            }
            Item::FirstBinary(data) => {
                *self = Fragments::Binary(0);
                (data, false)
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        let size = match self {
            Fragments::None => 0, // the codec refuses this order first
            Fragments::Text(text) => {
                text.extend_from_slice(&data);
                text.len()
            }
            Fragments::Binary(n) => {
                *n += data.len();
                *n
            }
        };
        if size > max {
            *self = Fragments::None;
            return Assembled::TooBig;
        }
        if !last {
            return Assembled::Pending;
        }
        match std::mem::take(self) {
            Fragments::None => Assembled::Pending,
            Fragments::Binary(_) => Assembled::Binary,
            Fragments::Text(text) => match ByteString::try_from(Bytes::from(text)) {
                Ok(text) => Assembled::Text(text),
                Err(_) => Assembled::NotUtf8,
            },
        }
    }
}

/// Whether the codec refused a text frame for not being UTF-8 (it reports
/// that as an I/O error carrying the UTF-8 error's text, so the text is
/// what can be told apart).
pub(crate) fn not_utf8(e: &actix_http::ws::ProtocolError) -> bool {
    matches!(e, actix_http::ws::ProtocolError::Io(io) if io.to_string().contains("utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn text_fragments_make_one_message_bounded_and_checked() {
        let mut f = Fragments::default();
        assert_eq!(
            f.push(Item::FirstText(text(r#"{"type":"#)), 64),
            Assembled::Pending
        );
        assert_eq!(
            f.push(Item::Continue(text(r#""ping","#)), 64),
            Assembled::Pending
        );
        assert_eq!(
            f.push(Item::Last(text(r#""id":1}"#)), 64),
            Assembled::Text(r#"{"type":"ping","id":1}"#.into())
        );
        assert_eq!(f.push(Item::FirstText(text("1234")), 6), Assembled::Pending);
        assert_eq!(f.push(Item::Last(text("567")), 6), Assembled::TooBig);
        // A UTF-8 character split across fragments is fine; broken UTF-8 is not.
        let e = "é".as_bytes();
        assert_eq!(
            f.push(Item::FirstText(Bytes::copy_from_slice(&e[..1])), 64),
            Assembled::Pending
        );
        assert_eq!(
            f.push(Item::Last(Bytes::copy_from_slice(&e[1..])), 64),
            Assembled::Text("é".into())
        );
        assert_eq!(
            f.push(Item::FirstText(Bytes::from_static(b"\xff")), 64),
            Assembled::Pending
        );
        assert_eq!(f.push(Item::Last(Bytes::new()), 64), Assembled::NotUtf8);
        assert_eq!(
            f.push(Item::FirstBinary(Bytes::from_static(b"\x01")), 64),
            Assembled::Pending
        );
        assert_eq!(f.push(Item::Last(Bytes::new()), 64), Assembled::Binary);
    }
}
