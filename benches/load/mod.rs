//! Shared by the load tests (`fanout`, `connections`, `rtt`): starting the
//! servers under test, WebSocket clients, pinning, resource figures, and the
//! comparison table and JSON they write.
//!
//! Each load test runs one scenario against every target of [`plan`]:
//! Holdfast (`target/release/holdfast`, spawned) and the baseline
//! (`benches/baseline`, spawned as a mode of the bench binary), or servers
//! already running at `<BENCH>_URL` / `BASELINE_URL`. Targets run one after
//! the other, never at the same time.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::baseline;

/// A client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// The realtime settings Holdfast is started with, so that its own limits
/// (connections, per-connection rate, outbound queue) do not cap the load.
pub const HOLDFAST_WS_ENV: [(&str, &str); 5] = [
    ("HOLDFAST__WS__MAX_CONNECTIONS", "100000"),
    ("HOLDFAST__WS__RATE_PER_SEC", "1000000"),
    ("HOLDFAST__WS__RATE_BURST", "1000000"),
    ("HOLDFAST__WS__OUTBOUND_MAX_MESSAGES", "100000"),
    ("HOLDFAST__WS__OUTBOUND_MAX_BYTES", "67108864"),
];

/// How long a server has to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has for the handshake plus `welcome`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- env, time

/// `name` parsed, or `default` when unset; a value that does not parse stops
/// the bench naming the variable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a valid value")),
        _ => default,
    }
}

/// An optional variable, empty counting as unset.
pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `name` is set to 1/true/yes.
pub fn env_flag(name: &str) -> bool {
    matches!(
        env_opt(name)
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("1" | "true" | "yes")
    )
}

pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on this process's monotonic clock: publishers embed it in
/// `data`, subscribers in the same process subtract it from their own.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Seconds since the Unix epoch, for the JSON.
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ------------------------------------------------------------- frame scanning

/// Index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = from
            + hay[from..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Index of the last `needle` in `hay`.
pub fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let last = *needle.last()?;
    let mut end = hay.len();
    while end >= needle.len() {
        let j = hay[needle.len() - 1..end]
            .iter()
            .rposition(|&b| b == last)?
            + needle.len()
            - 1;
        let i = j + 1 - needle.len();
        if &hay[i..=j] == needle {
            return Some(i);
        }
        end = j;
    }
    None
}

/// The unsigned integer at `i` (after optional spaces).
pub(crate) fn u64_at(frame: &[u8], mut i: usize) -> Option<u64> {
    while frame.get(i) == Some(&b' ') {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while let Some(d) = frame.get(i).filter(|b| b.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    (i > start).then_some(v)
}

/// The unsigned integer after the first `key` (e.g. `"offset":`), without
/// parsing the rest of the frame.
pub fn field_u64(frame: &[u8], key: &[u8]) -> Option<u64> {
    u64_at(frame, find(frame, key)? + key.len())
}

/// The unsigned integer after the last `key`: for a field of `data`, which
/// servers put last, this scans only the frame's tail.
pub fn last_field_u64(frame: &[u8], key: &[u8]) -> Option<u64> {
    u64_at(frame, rfind(frame, key)? + key.len())
}

/// The frame's `type` is `ty` (written as `"type":"ty"`, compact JSON).
pub fn is_type(frame: &[u8], ty: &[u8]) -> bool {
    // `"type":"` + ty + `"`, without allocating.
    const KEY: &[u8] = b"\"type\":\"";
    let mut from = 0;
    while let Some(i) = find(&frame[from..], KEY) {
        let v = from + i + KEY.len();
        if frame.len() > v + ty.len()
            && &frame[v..v + ty.len()] == ty
            && frame[v + ty.len()] == b'"'
        {
            return true;
        }
        from = v;
    }
    false
}

mod client;
#[path = "../../tests/common/client_frame.rs"]
pub(crate) mod client_frame;
pub mod fanout;
mod report;
pub mod rtt;
mod server;
mod stats;

pub use client::*;
pub use report::*;
pub use server::*;
pub use stats::*;
