//! The driver's framing of what a client sends: where each WebSocket frame
//! ends in a connection's received bytes (RFC 6455 §5.2), so that the
//! WebSocket context is handed whole frames, one at a time, and a frame
//! over the limit is refused from its header, before its payload is read.
//! The context's codec decodes what this hands over; the two agree on
//! every frame's length (`crate::fuzz::ws_stream` checks it).

use bytes::{Bytes, BytesMut};

/// What [`take`] found at the start of a connection's received bytes.
pub(crate) enum Taken {
    /// A whole frame, for the context to decode (or refuse: a frame bad
    /// from its first two bytes is handed over as those two).
    Frame(Bytes),
    /// A frame announcing more than the limit: this stand-in header, which
    /// the context refuses as too big; the received bytes are dropped.
    Oversize(Bytes),
    /// Not yet a whole frame: more must be read.
    Partial,
}

/// Takes the first frame from `pending`, the bytes received and not yet
/// handed over. An emptied buffer is replaced by an unallocated one, so
/// that an idle connection holds no buffer.
pub(crate) fn take(pending: &mut BytesMut, max_frame_bytes: usize) -> Taken {
    match next_frame(pending, max_frame_bytes) {
        Next::Frame(len) => {
            let frame = pending.split_to(len).freeze();
            if pending.is_empty() {
                *pending = BytesMut::new();
            }
            Taken::Frame(frame)
        }
        Next::Oversize => {
            let header = oversize_header(pending[0]);
            *pending = BytesMut::new();
            Taken::Oversize(header)
        }
        Next::Partial => Taken::Partial,
    }
}

/// What the bytes at the start of a connection's buffer hold.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Not yet a whole frame.
    Partial,
    /// A whole frame of this many bytes (RFC 6455 §5.2).
    Frame(usize),
    /// The header of a frame over the limit: refused before its payload.
    Oversize,
}

fn next_frame(buf: &[u8], max: usize) -> Next {
    let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else {
        return Next::Partial;
    };
    if !valid_start(first, second) {
        // The context refuses it from these two bytes, as soon as it has them.
        return Next::Frame(2);
    }
    let (extended, len) = match second & 0x7f {
        126 => (
            2,
            buf.get(2..4)
                .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        ),
        127 => (
            8,
            buf.get(2..10)
                .and_then(|b| Some(u64::from_be_bytes(b.try_into().ok()?))),
        ),
        n => (0, Some(u64::from(n))),
    };
    let Some(len) = len else {
        return Next::Partial;
    };
    let head = 2 + extended + if second & 0x80 != 0 { 4 } else { 0 };
    match usize::try_from(len) {
        Ok(len) if len <= max && buf.len() >= head + len => Next::Frame(head + len),
        Ok(len) if len <= max => Next::Partial,
        _ => Next::Oversize,
    }
}

/// Whether a client frame's first two bytes pass what the context checks
/// of them: no reserved bits, a known opcode, masked.
fn valid_start(first: u8, second: u8) -> bool {
    first & 0x70 == 0 && matches!(first & 0x0f, 0 | 1 | 2 | 8 | 9 | 10) && second & 0x80 != 0
}

/// A frame header the context refuses as too big from the header alone
/// (a 64-bit length with its top bit set, masked), standing in for the
/// client's oversize frame, whose payload is never read: the context would
/// wait for all of it first. It keeps the client's first byte (valid: see
/// [`valid_start`]).
fn oversize_header(first: u8) -> Bytes {
    Bytes::from(vec![first, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::{next_frame, oversize_header, take, Next, Taken};
    use actix_codec::Decoder;
    use actix_http::ws::{Codec, ProtocolError};
    use bytes::BytesMut;

    #[test]
    fn a_frame_is_whole_once_its_header_mask_and_payload_are_there() {
        // A masked text frame of 5 bytes: 2 + 4 + 5.
        let frame = [0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        for cut in 0..frame.len() {
            assert_eq!(
                next_frame(&frame[..cut], 100),
                Next::Partial,
                "cut at {cut}"
            );
        }
        assert_eq!(next_frame(&frame, 100), Next::Frame(11));
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        assert_eq!(next_frame(&two, 100), Next::Frame(11));
    }

    #[test]
    fn a_frame_bad_from_its_first_bytes_is_handed_over_without_its_payload() {
        // Unmasked, reserved bits, an unknown opcode: 1,000 bytes announced.
        for start in [[0x81, 0x7e], [0xc1, 0xfe], [0x83, 0xfe]] {
            let mut header = start.to_vec();
            header.extend_from_slice(&[0x03, 0xe8, 1, 2, 3, 4]);
            assert_eq!(next_frame(&header, 4000), Next::Frame(2), "{start:x?}");
            let mut buf = bytes::BytesMut::from(&header[..2]);
            let refused = Codec::new().max_size(4000).decode(&mut buf);
            assert!(refused.is_err(), "{start:x?}: {refused:?}");
        }
    }

    #[test]
    fn extended_lengths_are_read_and_an_oversize_frame_is_known_from_its_header() {
        let mut frame = vec![0x82, 0xfe, 0x01, 0x00, 9, 9, 9, 9];
        frame.extend(std::iter::repeat_n(0u8, 256));
        assert_eq!(next_frame(&frame, 1000), Next::Frame(8 + 256));
        assert_eq!(next_frame(&frame[..100], 1000), Next::Partial);
        assert_eq!(next_frame(&frame[..4], 255), Next::Oversize);
        assert_eq!(next_frame(&frame[..3], 255), Next::Partial);
        let huge = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(next_frame(&huge, 1000), Next::Oversize);
        assert_eq!(next_frame(&huge[..9], 1000), Next::Partial);
    }

    #[test]
    fn the_stand_in_header_is_refused_by_the_context_as_the_frame_would_be() {
        let decode = |header: bytes::Bytes| {
            let mut buf = BytesMut::from(&header[..]);
            Codec::new().max_size(100).decode(&mut buf)
        };
        for first in [0x81, 0x82, 0x01, 0x89] {
            let refused = decode(oversize_header(first));
            assert!(
                matches!(refused, Err(ProtocolError::Overflow)),
                "{first:x}: {refused:?}"
            );
        }
    }

    #[test]
    fn take_hands_over_one_frame_and_leaves_an_idle_buffer_unallocated() {
        let frame = [0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        let mut pending = BytesMut::from(&frame[..4]);
        assert!(matches!(take(&mut pending, 100), Taken::Partial));
        pending.extend_from_slice(&frame[4..]);
        pending.extend_from_slice(&frame[..2]);
        assert!(matches!(take(&mut pending, 100), Taken::Frame(f) if f[..] == frame[..]));
        assert_eq!(&pending[..], &frame[..2], "the next frame's start is kept");
        pending.extend_from_slice(&frame[2..]);
        assert!(matches!(take(&mut pending, 100), Taken::Frame(_)));
        assert_eq!(pending.capacity(), 0, "nothing held while idle");
        let mut big = BytesMut::from(&[0x82, 0xfe, 0x01, 0x00][..]);
        assert!(matches!(take(&mut big, 255), Taken::Oversize(_)));
        assert_eq!(big.capacity(), 0);
    }
}
