//! Entry points of the fuzz targets (`fuzz/`, `cargo +nightly fuzz run
//! <target>`) and of the corpus replay test (`server/tests/fuzz_corpus.rs`,
//! on stable, in `cargo test`): each takes any bytes, runs them through the
//! server's own code for that input, and must never panic, whatever the
//! bytes. They are not an API for applications.

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame};
use bytes::BytesMut;

use crate::config::Settings;
use crate::ws::framing::{self, Taken};
use crate::ws::protocol::{nesting_within, ClientFrame, MAX_DATA_DEPTH};
use crate::ws::session::fragments::{Assembled, Fragments};

/// `ws.max_frame_bytes` of the embedded defaults, read once.
static MAX_FRAME_BYTES: std::sync::LazyLock<usize> =
    std::sync::LazyLock::new(|| Settings::defaults().ws.max_frame_bytes);

/// One text frame from a client, as a session parses it: a frame either
/// parses or is refused with an error code and a message.
pub fn client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the transport closes with 1007 first
    };
    let _ = nesting_within(text, MAX_DATA_DEPTH);
    if let Err(refused) = ClientFrame::parse(text) {
        assert!(!refused.code.is_empty() && !refused.message.is_empty());
    }
}

/// What a client sends after the handshake: the first byte picks the size
/// of the reads the rest arrives in (1 to 256 bytes), then the driver's
/// framing (`ws::framing`), which hands the server's WebSocket codec
/// (masked frames, `max_frame_bytes`) one frame at a time, the reassembly
/// of fragments, and the parse of every whole text message, as a session
/// does them; a codec error ends the stream, as it closes the connection.
/// The framing and the codec must agree: the codec decodes each frame
/// handed over whole (or refuses it), never waits for more of it, and
/// refuses the stand-in for a frame over the limit.
pub fn ws_stream(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let read = usize::from(first) + 1;
    let max = *MAX_FRAME_BYTES;
    let mut codec = Codec::new().max_size(max);
    let mut pending = BytesMut::new();
    let mut fragments = Fragments::default();
    for chunk in rest.chunks(read) {
        pending.extend_from_slice(chunk);
        loop {
            let handed = match framing::take(&mut pending, max) {
                Taken::Partial => break,
                Taken::Oversize(header) => {
                    let refused = codec.decode(&mut BytesMut::from(&header[..]));
                    assert!(refused.is_err(), "the stand-in header is refused");
                    return;
                }
                Taken::Frame(frame) => frame,
            };
            let mut buf = BytesMut::from(&handed[..]);
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(
                        buf.is_empty(),
                        "the codec takes the whole frame handed over"
                    );
                    if !on_frame(frame, &mut fragments) {
                        return;
                    }
                }
                Ok(None) => panic!(
                    "the framing handed over {} bytes the codec finds incomplete",
                    handed.len()
                ),
                Err(_) => return,
            }
        }
    }
}

/// One decoded frame; false where the session would close.
fn on_frame(frame: Frame, fragments: &mut Fragments) -> bool {
    match frame {
        Frame::Text(data) => match std::str::from_utf8(&data) {
            Ok(text) => client_frame(text.as_bytes()),
            Err(_) => return false,
        },
        Frame::Continuation(item) => match fragments.push(item, *MAX_FRAME_BYTES) {
            Assembled::Text(text) => client_frame(text.as_bytes()),
            Assembled::Pending | Assembled::Binary => {}
            Assembled::TooBig | Assembled::NotUtf8 => return false,
        },
        Frame::Close(_) => return false,
        Frame::Binary(_) | Frame::Ping(_) | Frame::Pong(_) => {}
    }
    true
}

/// A configuration file: the embedded defaults overlaid with it, as
/// `holdfast --config` loads one, then everything start-up derives from
/// a valid one.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = Settings::from_toml(text) {
        let _ = settings.kernel();
        let _ = settings.intensity();
        let _ = settings.backoff();
        let _ = settings.to_toml();
    }
}
