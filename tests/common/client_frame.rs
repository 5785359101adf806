//! The bytes of a WebSocket frame as a client sends it (RFC 6455 §5.2): the
//! one encoder of the test and bench clients: `common::client_frame` here,
//! and through `#[path]` in `server/tests/common` (for the network fuzzer)
//! and in `benches/load` (for `RawWs`).
#![allow(dead_code)]

/// The test clients' masking key: fixed, so that a failing case replays
/// byte for byte.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Appends one frame to `out`. `first` is its first byte (FIN, the RSV bits,
/// the opcode); `mask` its masking key, `None` for an unmasked frame (which
/// a server must refuse from a client).
pub fn encode(out: &mut Vec<u8>, first: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(first);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= 0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// A whole, masked frame with the fixed [`KEY`]: FIN set, no RSV bits.
pub fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode(&mut out, 0x80 | opcode, payload, Some(KEY));
    out
}
