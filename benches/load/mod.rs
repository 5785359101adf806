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
const READY_TIMEOUT: Duration = Duration::from_secs(30);

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

fn epoch() -> Instant {
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
fn u64_at(frame: &[u8], mut i: usize) -> Option<u64> {
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

// ------------------------------------------------------------------- clients

/// Host and port of a `ws://host:port/path` URL.
fn authority(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// Connects, upgrades and waits for `welcome`. `read_buffer` is the client's
/// read buffer (small for thousands of idle clients, larger for subscribers).
///
/// # Errors
/// A refused connection, a non-101 answer (with its status) or no `welcome`.
pub async fn connect(url: &str, read_buffer: usize) -> Result<Ws, String> {
    let tcp = TcpStream::connect(authority(url)?)
        .await
        .map_err(|e| format!("connect {url}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(res) => format!("{url}: HTTP {} instead of the upgrade", res.status()),
            e => format!("{url}: {e}"),
        })?;
    let first = next_text(&mut ws).await?;
    if !is_type(first.as_bytes(), b"welcome") {
        return Err(format!("{url}: first frame is not a welcome: {first}"));
    }
    Ok(ws)
}

/// The next text frame (control frames are skipped).
///
/// # Errors
/// The connection ended or failed first.
pub async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Sends `join` and waits for `joined`; returns the room's latest offset.
///
/// # Errors
/// An `error` reply, or the connection failed.
pub async fn join(ws: &mut Ws, room: &str) -> Result<u64, String> {
    use futures_util::SinkExt;
    ws.send(Message::text(format!(
        r#"{{"type":"join","room":"{room}","id":"join"}}"#
    )))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        let frame = next_text(ws).await?;
        if is_type(frame.as_bytes(), b"joined") {
            return field_u64(frame.as_bytes(), b"\"offset\":")
                .ok_or_else(|| format!("joined without an offset: {frame}"));
        }
        if is_type(frame.as_bytes(), b"error") {
            return Err(format!("join {room}: {frame}"));
        }
    }
}

/// Runs `make(i)` for `i` in `0..n`, at most `concurrency` at a time, each in
/// its own task; results in order of `i`.
pub async fn run_many<T, F, Fut>(n: usize, concurrency: usize, make: F) -> Vec<Result<T, String>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // The semaphore is never closed.
        let permit = sem.clone().acquire_owned().await.unwrap();
        let fut = make(i);
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(format!("task failed: {e}"))));
    }
    out
}

/// All `Ok`, or the first error with how many failed.
pub fn all_ok<T>(results: Vec<Result<T, String>>) -> Result<Vec<T>, String> {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let total = results.len();
    let mut ok = Vec::with_capacity(total);
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => return Err(format!("{failed} of {total} failed; first: {e}")),
        }
    }
    Ok(ok)
}

// ------------------------------------------------------ raw client (hot path)

/// A minimal WebSocket client for the receive-heavy hot path (fan-out
/// subscribers): frames are parsed in place in one reusable buffer, with no
/// allocation, no UTF-8 validation and no message objects per frame. It
/// answers pings, ends at a close frame, reassembles fragmented messages, and
/// masks what it sends, as RFC 6455 asks of a client.
pub struct RawWs {
    stream: TcpStream,
    /// Received bytes; `buf[start..end]` is not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A fragmented message being reassembled.
    fragments: Vec<u8>,
    /// State of the masking-key generator.
    mask_seed: u64,
    /// The code of the server's close frame, once one arrived (1005: none
    /// given).
    pub close_code: Option<u16>,
}

/// A parsed frame header: opcode, FIN, payload range in `buf`, frame end.
struct RawFrame {
    opcode: u8,
    fin: bool,
    payload: std::ops::Range<usize>,
    end: usize,
}

impl RawWs {
    /// Connects, upgrades (checking for `101`), and waits for `welcome`.
    ///
    /// # Errors
    /// A refused connection, another HTTP status, or no `welcome`.
    pub async fn connect(url: &str, read_buffer: usize) -> Result<RawWs, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = authority(url)?;
        let path = url["ws://".len() + host.len()..].to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let mut stream = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut ws = RawWs {
            stream,
            buf: vec![0; read_buffer.max(1024)],
            start: 0,
            end: 0,
            fragments: Vec::new(),
            mask_seed: now_ns() | 1,
            close_code: None,
        };
        // The response head; frames may follow it in the same read.
        let head_end = loop {
            if let Some(i) = find(&ws.buf[..ws.end], b"\r\n\r\n") {
                break i + 4;
            }
            if ws.end == ws.buf.len() {
                return Err(format!("{url}: response head too long"));
            }
            let n = ws
                .stream
                .read(&mut ws.buf[ws.end..])
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if n == 0 {
                return Err(format!("{url}: closed during the handshake"));
            }
            ws.end += n;
        };
        let status_line =
            String::from_utf8_lossy(&ws.buf[..find(&ws.buf, b"\r\n").unwrap_or(0)]).into_owned();
        if !status_line.starts_with("HTTP/1.1 101") {
            let status = status_line.split_whitespace().nth(1).unwrap_or("?");
            return Err(format!("{url}: HTTP {status} instead of the upgrade"));
        }
        ws.start = head_end;
        match ws.next_text().await? {
            Some(first) if is_type(first, b"welcome") => Ok(ws),
            Some(first) => Err(format!(
                "{url}: first frame is not a welcome: {}",
                String::from_utf8_lossy(first)
            )),
            None => Err(format!("{url}: closed before welcome")),
        }
    }

    /// Sends a text frame (masked).
    ///
    /// # Errors
    /// The write failed.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        // xorshift: masking keys only need to vary, not to be secret here.
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 7;
        self.mask_seed ^= self.mask_seed << 17;
        let key = (self.mask_seed as u32).to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| e.to_string())
    }

    /// The frame at `buf[start..end]`, if complete; unmasks it in place.
    fn parse(&mut self) -> Result<Option<RawFrame>, String> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(None);
        }
        let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0);
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()),
                10,
            ),
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        let key = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        let len = usize::try_from(len).map_err(|_| "frame too large".to_owned())?;
        if b.len() < at + len {
            // Make room for a frame larger than the buffer.
            if at + len > self.buf.len() {
                self.buf.resize(at + len, 0);
            }
            return Ok(None);
        }
        let payload = self.start + at..self.start + at + len;
        if let Some(key) = key {
            for (i, byte) in self.buf[payload.clone()].iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        Ok(Some(RawFrame {
            opcode,
            fin,
            end: payload.end,
            payload,
        }))
    }

    /// Reads more bytes, compacting the buffer first when it is mostly
    /// consumed.
    async fn fill(&mut self) -> Result<usize, String> {
        use tokio::io::AsyncReadExt;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && (self.end == self.buf.len() || self.start > self.buf.len() / 2)
        {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| e.to_string())?;
        self.end += n;
        Ok(n)
    }

    /// The next text message's payload; `None` once the server closed.
    /// Pings are answered on the way.
    ///
    /// # Errors
    /// The connection failed or ended without a close frame.
    pub async fn next_text(&mut self) -> Result<Option<&[u8]>, String> {
        loop {
            let Some(f) = self.parse()? else {
                if self.fill().await? == 0 {
                    return Err("connection ended".into());
                }
                continue;
            };
            self.start = f.end;
            match (f.opcode, f.fin) {
                (0x1, true) => return Ok(Some(&self.buf[f.payload])),
                (0x1 | 0x2, false) => {
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&self.buf[f.payload]);
                }
                (0x0, fin) => {
                    self.fragments.extend_from_slice(&self.buf[f.payload]);
                    if fin {
                        return Ok(Some(&self.fragments));
                    }
                }
                (0x8, _) => {
                    let p = &self.buf[f.payload];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    self.close_code = Some(code);
                    // Echo the close, as a client should; the server may
                    // already be gone.
                    let echo = code.to_be_bytes();
                    let _ = self
                        .send_frame(0x8, if code == 1005 { &[] } else { &echo })
                        .await;
                    return Ok(None);
                }
                (0x9, _) => {
                    let payload = self.buf[f.payload].to_vec();
                    self.send_frame(0xA, &payload).await?;
                }
                _ => {} // binary, pong
            }
        }
    }

    /// Sends `join` and waits for `joined`; returns the room's latest offset.
    ///
    /// # Errors
    /// An `error` reply, or the connection failed or closed.
    pub async fn join(&mut self, room: &str) -> Result<u64, String> {
        self.send_text(&format!(r#"{{"type":"join","room":"{room}","id":"join"}}"#))
            .await?;
        loop {
            let frame = self.next_text().await?.ok_or("closed before joined")?;
            if is_type(frame, b"joined") {
                return field_u64(frame, b"\"offset\":").ok_or_else(|| {
                    format!(
                        "joined without an offset: {}",
                        String::from_utf8_lossy(frame)
                    )
                });
            }
            if is_type(frame, b"error") {
                return Err(format!("join {room}: {}", String::from_utf8_lossy(frame)));
            }
        }
    }
}

// ------------------------------------------------------- percentiles, stats

/// Nearest-rank percentile (`p` from 0 to 100) of sorted samples.
pub fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Nanoseconds to milliseconds.
pub fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e6)
}

/// Nanoseconds to microseconds.
pub fn us(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e3)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (`None`: this one), in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time a process spends over an interval, as % of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    t0: Instant,
    ticks0: Option<u64>,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None`: the load generator itself).
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            t0: Instant::now(),
            ticks0: cpu_ticks(pid),
        }
    }

    /// % of one core since [`CpuMeter::start`] (200 = two cores busy).
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_ticks(self.pid)?.checked_sub(self.ticks0?)? as f64 / clock_ticks();
        let wall = self.t0.elapsed().as_secs_f64();
        (wall > 0.0).then(|| 100.0 * used / wall)
    }
}

/// Busy and total jiffies of some CPUs (`None`: all) from `/proc/stat`,
/// whoever used them: softirq work on loopback traffic is charged to no
/// process, so this is what tells whether a pinned side was saturated.
fn cpu_jiffies(cpus: Option<&[usize]>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (mut busy, mut total) = (0, 0);
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let (id, fields) = rest.split_once(' ')?;
        let wanted = match cpus {
            None => id.is_empty(),
            Some(set) => id.parse::<usize>().is_ok_and(|c| set.contains(&c)),
        };
        if !wanted {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        let f: Vec<u64> = fields
            .split_whitespace()
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 8 {
            return None;
        }
        busy += f[0] + f[1] + f[2] + f[5] + f[6];
        total += f.iter().sum::<u64>();
    }
    (total > 0).then_some((busy, total))
}

/// How busy a set of CPUs was over an interval, all processes and interrupt
/// work included, as % (100 = every CPU of the set busy all the time).
pub struct CpuSetMeter {
    cpus: Option<Vec<usize>>,
    start: Option<(u64, u64)>,
}

impl CpuSetMeter {
    /// Starts measuring `cpus` (`None`: the whole machine).
    pub fn start(cpus: Option<Vec<usize>>) -> Self {
        let start = cpu_jiffies(cpus.as_deref());
        Self { cpus, start }
    }

    /// % busy since [`CpuSetMeter::start`].
    pub fn percent(&self) -> Option<f64> {
        let (b0, t0) = self.start?;
        let (b1, t1) = cpu_jiffies(self.cpus.as_deref())?;
        let total = t1.checked_sub(t0)?;
        (total > 0).then(|| 100.0 * b1.saturating_sub(b0) as f64 / total as f64)
    }
}

/// Name of the figure for CPU time used by neither process.
const OTHER_CPU: &str = "other CPU (system - both processes)";

/// "Other CPU" above this (% of one core) means something else ran: loopback
/// softirq work alone stays well below it.
const DISTURBED_OTHER_CPU: f64 = 30.0;

/// Meters over one measured phase: both processes and, when pinned, both
/// CPU sets.
pub struct PhaseCpu {
    generator: CpuMeter,
    server: CpuMeter,
    generator_cpus: Option<CpuSetMeter>,
    server_cpus: Option<CpuSetMeter>,
    machine: CpuSetMeter,
}

impl PhaseCpu {
    /// Starts every meter; `server` is the server's pid if known.
    pub fn start(setup: &Setup, server: Option<u32>) -> Self {
        Self {
            generator: CpuMeter::start(None),
            server: CpuMeter::start(server),
            generator_cpus: setup
                .client_cpus
                .as_deref()
                .map(|c| CpuSetMeter::start(Some(parse_cpus(c)))),
            server_cpus: setup
                .server_cpus
                .as_deref()
                .map(|c| CpuSetMeter::start(Some(parse_cpus(c)))),
            machine: CpuSetMeter::start(None),
        }
    }

    /// The figures, names prefixed with `prefix` (e.g. `"connect: "`).
    /// "other CPU" is the machine's busy time less both processes', in % of
    /// one core: loopback softirq work (some tens of %) plus anything else
    /// running; far more than that means the run was disturbed.
    pub fn metrics(&self, prefix: &'static str) -> Vec<Metric> {
        let machine = self.machine.percent();
        let (generator, server) = (self.generator.percent(), self.server.percent());
        let other = machine.map(|m| {
            // Clock-tick granularity can make a short phase's figure
            // slightly negative.
            (m * online_cpus() as f64 - generator.unwrap_or(0.0) - server.unwrap_or(0.0)).max(0.0)
        });
        let name = |n: &'static str| -> &'static str {
            if prefix.is_empty() {
                n
            } else {
                Box::leak(format!("{prefix}{n}").into_boxed_str())
            }
        };
        vec![
            metric(
                name("load generator CPU (process)"),
                "% of 1 core",
                Better::Neither,
                generator,
            ),
            metric(
                name("server CPU (process)"),
                "% of 1 core",
                Better::Neither,
                server,
            ),
            metric(
                name("load generator CPUs busy (system)"),
                "%",
                Better::Neither,
                self.generator_cpus.as_ref().and_then(CpuSetMeter::percent),
            ),
            metric(
                name("server CPUs busy (system)"),
                "%",
                Better::Neither,
                self.server_cpus.as_ref().and_then(CpuSetMeter::percent),
            ),
            metric(
                name("all CPUs busy (system)"),
                "%",
                Better::Neither,
                machine,
            ),
            metric(name(OTHER_CPU), "% of 1 core", Better::Neither, other),
        ]
    }
}

/// CPUs online (the `cpuN` lines of `/proc/stat`).
fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// --------------------------------------------------------- process set-up

/// Pinning, descriptors and threads of this run.
pub struct Setup {
    /// `taskset -c` list the servers run under, if any.
    pub server_cpus: Option<String>,
    /// CPUs the load generator is pinned to, if any.
    pub client_cpus: Option<String>,
    /// RLIMIT_NOFILE after raising: (soft, hard).
    pub nofile: (u64, u64),
    /// Worker threads of the load generator's runtime.
    pub threads: usize,
}

impl Setup {
    /// Raises RLIMIT_NOFILE to `2 * clients + 1000` (servers spawned later
    /// inherit it; each process needs about `clients + 1000`), pins
    /// this process to `CLIENT_CPUS` and notes `SERVER_CPUS`. Call first in
    /// `main`, before any thread exists, so every later thread inherits the
    /// pinning.
    pub fn new(clients: u64) -> Self {
        let nofile = raise_nofile(clients * 2 + 1000, clients + 1000);
        let server_cpus_env = env_opt("SERVER_CPUS");
        let client_cpus = env_opt("CLIENT_CPUS");
        let mut server_cpus = server_cpus_env;
        if let Some(list) = &client_cpus {
            // Children inherit this process's affinity: unless told otherwise
            // the servers keep the CPUs this process had before pinning.
            if server_cpus.is_none() {
                server_cpus = current_cpus();
            }
            pin_self(list);
        }
        let threads = env_or(
            "LOADGEN_THREADS",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        Self {
            server_cpus,
            client_cpus,
            nofile,
            threads,
        }
    }

    /// The load generator's runtime: multi-threaded, one worker per CPU it
    /// may use (LOADGEN_THREADS to change).
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// For the header and the JSON.
    pub fn describe(&self) -> Value {
        json!({
            "server_cpus": self.server_cpus,
            "client_cpus": self.client_cpus,
            "loadgen_threads": self.threads,
            "nofile_soft": self.nofile.0,
            "nofile_hard": self.nofile.1,
        })
    }
}

/// Raises RLIMIT_NOFILE towards `want`; `need` is what one process (the
/// generator, or a server, which inherits the limit) must have.
fn raise_nofile(want: u64, need: u64) -> (u64, u64) {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().unwrap_or((1024, 1024));
    if soft >= want {
        return (soft, hard);
    }
    // With CAP_SYS_RESOURCE the hard limit may rise too; without it, soft
    // may rise up to hard.
    if rlimit::setrlimit(Resource::NOFILE, want, want.max(hard)).is_err() {
        let _ = rlimit::setrlimit(Resource::NOFILE, want.min(hard), hard);
    }
    let now = Resource::NOFILE.get().unwrap_or((soft, hard));
    if now.0 < need {
        eprintln!(
            "warning: RLIMIT_NOFILE is {} (hard {}) but each process needs about {need}: \
             connects will fail with EMFILE; raise `ulimit -Hn` (as root) first",
            now.0, now.1
        );
    } else if now.0 < want {
        eprintln!(
            "note: RLIMIT_NOFILE is {} (the hard limit), not {want}: enough, since the limit is per \
             process and each process needs about {need}",
            now.0
        );
    }
    now
}

fn parse_cpus(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad CPU list {list}"));
        let b: usize = b
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad CPU list {list}"));
        cpus.extend(a..=b);
    }
    cpus
}

fn current_cpus() -> Option<String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the size is its own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .map(|c| c.to_string())
            .collect();
        Some(cpus.join(","))
    }
}

fn pin_self(list: &str) {
    let cpus = parse_cpus(list);
    // SAFETY: as above; pid 0 is the calling thread, and every thread created
    // afterwards inherits its mask.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in &cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "CLIENT_CPUS={list}: sched_setaffinity failed: {}",
        std::io::Error::last_os_error()
    );
}

// ------------------------------------------------------------------- servers

/// Which server a target is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// `target/release/holdfast`, or the server at `<BENCH>_URL`.
    Holdfast,
    /// `benches/baseline`, or the server at `BASELINE_URL`.
    Baseline,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Holdfast => "holdfast",
            Kind::Baseline => "baseline",
        }
    }
}

/// One target of this run: spawn it, or use a server already running.
pub struct Plan {
    pub kind: Kind,
    /// `Some(url)`: already running there.
    pub url: Option<String>,
    /// Its pid when already running (`SERVER_PID` / `BASELINE_PID`), for RSS
    /// and CPU figures.
    pub pid: Option<u32>,
}

/// The targets, from `<BENCH>_URL`, `BASELINE_URL`, `BASELINE_ONLY` and
/// `HOLDFAST_ONLY`.
pub fn plan(bench: &str) -> Vec<Plan> {
    let url_var = format!("{}_URL", bench.to_ascii_uppercase());
    let holdfast_url = env_opt(&url_var);
    let baseline_url = env_opt("BASELINE_URL");
    let mut plans = Vec::new();
    if !env_flag("BASELINE_ONLY") {
        plans.push(Plan {
            kind: Kind::Holdfast,
            pid: holdfast_url
                .as_ref()
                .and_then(|_| env_opt("SERVER_PID")?.parse().ok()),
            url: holdfast_url.clone(),
        });
    }
    // Against a given URL the comparison needs a given baseline too.
    if !env_flag("HOLDFAST_ONLY") && (holdfast_url.is_none() || baseline_url.is_some()) {
        plans.push(Plan {
            kind: Kind::Baseline,
            pid: baseline_url
                .as_ref()
                .and_then(|_| env_opt("BASELINE_PID")?.parse().ok()),
            url: baseline_url,
        });
    }
    plans
}

/// A server under test; a spawned one is killed if still running on drop.
pub struct Server {
    pub kind: Kind,
    pub url: String,
    pub pid: Option<u32>,
    /// What it is, for the header.
    pub describe: String,
    child: Option<Child>,
    /// Holdfast's stdout and stderr.
    log: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Server {
    /// Starts (or finds) the target and checks that a client gets `welcome`.
    ///
    /// # Errors
    /// It did not start, did not become ready, or does not serve the
    /// WebSocket endpoint (e.g. HTTP 404 on `/ws`).
    pub fn start(
        plan: &Plan,
        setup: &Setup,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Server, String> {
        let server = match (&plan.url, plan.kind) {
            (Some(url), kind) => Server {
                kind,
                url: url.clone(),
                pid: plan.pid,
                describe: format!(
                    "already running{}",
                    plan.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                ),
                child: None,
                log: None,
                dir: None,
            },
            (None, Kind::Holdfast) => spawn_holdfast(setup)?,
            (None, Kind::Baseline) => spawn_baseline(setup)?,
        };
        rt.block_on(async {
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&server.url, 4096)).await {
                Ok(Ok(_ws)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "{}: no welcome within {CONNECT_TIMEOUT:?}",
                    server.url
                )),
            }
        })
        .map_err(|e| {
            if server.kind == Kind::Holdfast && e.contains("HTTP 404") {
                format!("{e}: this holdfast build does not serve /ws yet")
            } else {
                e
            }
        })?;
        Ok(server)
    }

    /// This bench started it (and may signal it).
    pub fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill has no memory preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `timeout` for a spawned server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops a spawned server: SIGTERM, then SIGKILL after 15 s. Reports an
    /// unclean Holdfast exit (with the tail of its log).
    pub fn stop(mut self) {
        if self.child.is_none() {
            return;
        }
        self.sigterm();
        match self.wait_exit(Duration::from_secs(15)) {
            Some(status) if self.kind == Kind::Holdfast && status.code() != Some(0) => {
                eprintln!("warning: holdfast exited with {status} after SIGTERM");
                self.print_log_tail();
            }
            Some(_) => {}
            None => eprintln!(
                "warning: {} did not exit within 15 s of SIGTERM; killing it",
                self.kind.label()
            ),
        }
    }

    /// The last lines of a spawned Holdfast's log.
    pub fn print_log_tail(&self) {
        if let Some(tail) = self.log.as_ref().and_then(log_tail) {
            eprintln!("--- holdfast log (tail) ---\n{tail}\n---");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn log_tail(path: &PathBuf) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// `target/release` (the bench binary is `target/release/deps/<name>-<hash>`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target/release")
        .to_path_buf()
}

/// Where the JSON results go: `target/bench-results`.
pub fn results_dir() -> PathBuf {
    release_dir()
        .parent()
        .expect("target")
        .join("bench-results")
}

/// `target/release/holdfast` (HOLDFAST_BIN to use another), built if missing.
fn holdfast_binary() -> PathBuf {
    if let Some(bin) = env_opt("HOLDFAST_BIN") {
        return bin.into();
    }
    let bin = release_dir().join("holdfast");
    if !bin.exists() {
        eprintln!("building {} (missing)", bin.display());
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "holdfast-server",
                "--bin",
                "holdfast",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --release -p holdfast-server failed"
        );
    }
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `taskset -c CPUS program` when server pinning is asked for.
fn server_command(setup: &Setup, program: &std::path::Path) -> Command {
    match &setup.server_cpus {
        Some(cpus) => {
            // taskset execs the program: the pid stays the server's.
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn http_ready(port: u16) -> bool {
    let Ok(mut s) = StdTcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

fn spawn_holdfast(setup: &Setup) -> Result<Server, String> {
    let bin = holdfast_binary();
    let mut with_ws_settings = true;
    loop {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("holdfast-load-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log_path = dir.join("holdfast.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = server_command(setup, &bin);
        cmd.current_dir(&dir)
            .env("HOLDFAST__SERVER__PORT", port.to_string())
            .env("HOLDFAST__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if with_ws_settings {
            cmd.envs(HOLDFAST_WS_ENV);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut server = Server {
            kind: Kind::Holdfast,
            url: format!("ws://127.0.0.1:{port}/ws"),
            pid: Some(child.id()),
            describe: format!("{}, pid {}", bin.display(), child.id()),
            child: Some(child),
            log: Some(log_path.clone()),
            dir: Some(dir),
        };
        let t0 = Instant::now();
        loop {
            if http_ready(port) {
                if !with_ws_settings {
                    server
                        .describe
                        .push_str(", without the HOLDFAST__WS__* settings");
                }
                return Ok(server);
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let tail = log_tail(&log_path).unwrap_or_default();
                if status.code() == Some(64) && with_ws_settings {
                    eprintln!(
                        "holdfast rejected its configuration (exit 64), most likely because this build \
                         has no [ws] section yet, so the HOLDFAST__WS__* keys it is started with \
                         (max_connections, rate_per_sec, rate_burst, outbound_max_messages, \
                         outbound_max_bytes) are unknown to it:\n  {}\nretrying without them: \
                         holdfast's own default limits apply",
                        tail.trim()
                    );
                    with_ws_settings = false;
                    break;
                }
                return Err(format!(
                    "holdfast exited with {status} before ready:\n{tail}"
                ));
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(format!("holdfast not ready within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn spawn_baseline(setup: &Setup) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let port = free_port();
    let child = server_command(setup, &exe)
        .env(baseline::LISTEN_ENV, format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn baseline: {e}"))?;
    let mut server = Server {
        kind: Kind::Baseline,
        url: format!("ws://127.0.0.1:{port}/ws"),
        pid: Some(child.id()),
        describe: format!(
            "tokio ({} runtime) + tokio-tungstenite (benches/baseline), pid {}",
            if baseline::current_thread() {
                "current_thread"
            } else {
                "multi_thread"
            },
            child.id()
        ),
        child: Some(child),
        log: None,
        dir: None,
    };
    let t0 = Instant::now();
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
            return Err(format!("baseline exited with {status} before listening"));
        }
        if t0.elapsed() > READY_TIMEOUT {
            return Err("baseline not listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(server)
}

// ------------------------------------------------------------------- report

/// Which way a figure is better, for the reader of the ratio.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Better {
    Higher,
    Lower,
    /// A count or a setting, not a score.
    Neither,
}

/// One figure of one target.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub value: Option<f64>,
}

/// Shorthand for a [`Metric`].
pub fn metric(
    name: &'static str,
    unit: &'static str,
    better: Better,
    value: impl Into<Option<f64>>,
) -> Metric {
    Metric {
        name,
        unit,
        better,
        value: value.into(),
    }
}

/// What one target produced.
pub struct Outcome {
    pub kind: Kind,
    pub url: String,
    pub describe: String,
    /// `Err`: why this target has no figures.
    pub result: Result<Vec<Metric>, String>,
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v == v.trunc() && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Prints the comparison table and writes `target/bench-results/<bench>.json`.
pub fn report(bench: &str, title: &str, config: Value, setup: &Setup, outcomes: &[Outcome]) {
    println!();
    println!("{title}");
    println!(
        "pinning: servers on CPUs {}, load generator on CPUs {} ({} runtime threads)",
        setup.server_cpus.as_deref().unwrap_or("any"),
        setup.client_cpus.as_deref().unwrap_or("any"),
        setup.threads
    );
    for o in outcomes {
        println!(
            "{:<9} {} ({})",
            format!("{}:", o.kind.label()),
            o.url,
            o.describe
        );
        if let Err(e) = &o.result {
            println!("          no figures: {e}");
        }
    }

    // Rows in order of first appearance.
    let mut names: Vec<(&'static str, &'static str, Better)> = Vec::new();
    let mut values: HashMap<(Kind, &'static str), Option<f64>> = HashMap::new();
    for o in outcomes {
        for m in o.result.iter().flatten() {
            if !names.iter().any(|(n, _, _)| *n == m.name) {
                names.push((m.name, m.unit, m.better));
            }
            values.insert((o.kind, m.name), m.value);
        }
    }
    let get = |k: Kind, n: &str| values.get(&(k, n)).copied().flatten();
    let has = |k: Kind| outcomes.iter().any(|o| o.kind == k);
    println!();
    println!(
        "{:<46} {:>11} {:>14} {:>14} {:>10}  better",
        "metric", "unit", "holdfast", "baseline", "ratio"
    );
    let mut rows = Vec::new();
    for (name, unit, better) in &names {
        let h = get(Kind::Holdfast, name);
        let b = get(Kind::Baseline, name);
        let ratio = ratio(h, b);
        let better_s = match better {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "",
        };
        let cell = |k: Kind, v: Option<f64>| if has(k) { fmt_value(v) } else { "-".into() };
        println!(
            "{:<46} {:>11} {:>14} {:>14} {:>10}  {}",
            name,
            unit,
            cell(Kind::Holdfast, h),
            cell(Kind::Baseline, b),
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            better_s
        );
        rows.push(json!({
            "metric": name, "unit": unit, "better": better_s,
            "holdfast": h, "baseline": b, "ratio_holdfast_to_baseline": ratio,
        }));
    }
    println!("ratio = holdfast / baseline");
    for o in outcomes {
        let worst = o
            .result
            .iter()
            .flatten()
            .filter(|m| m.name.ends_with(OTHER_CPU))
            .filter_map(|m| m.value)
            .fold(0.0_f64, f64::max);
        if worst > DISTURBED_OTHER_CPU {
            println!(
                "warning: during the {} run {worst:.0}% of a core went to neither the server nor the \
                 load generator: other work on the machine disturbed these figures; run again on an \
                 idle machine",
                o.kind.label()
            );
        }
    }

    let targets: serde_json::Map<String, Value> = outcomes
        .iter()
        .map(|o| {
            let v = match &o.result {
                Ok(metrics) => json!({
                    "url": o.url, "server": o.describe, "error": null,
                    "metrics": metrics.iter().map(|m| (m.name.to_owned(), json!({"value": m.value, "unit": m.unit})))
                        .collect::<serde_json::Map<_, _>>(),
                }),
                Err(e) => json!({"url": o.url, "server": o.describe, "error": e, "metrics": {}}),
            };
            (o.kind.label().to_owned(), v)
        })
        .collect();
    let doc = json!({
        "bench": bench,
        "title": title,
        "unix_time": unix_time(),
        "config": config,
        "setup": setup.describe(),
        "targets": targets,
        "rows": rows,
    });
    let dir = results_dir();
    let path = dir.join(format!("{bench}.json"));
    match std::fs::create_dir_all(&dir).and_then(|_| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )
    }) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Runs the scenario against each planned target in turn and reports.
/// `scenario` gets the running server and returns its figures.
///
/// `BENCH_ROUNDS=N` (default 1) repeats the whole plan N times, targets
/// alternating (holdfast, baseline, holdfast, …), each round with freshly
/// started servers. On a shared machine one target's figure moves between
/// runs more than the difference being measured; with rounds, each round's
/// headline figures and ratio are printed as it ends, and the table gives
/// every metric's median over the rounds (and the JSON each round's value).
/// `headlines` names the metrics printed per round, with their ratios.
pub fn run_all<F>(
    bench: &str,
    title: &str,
    mut config: Value,
    setup: &Setup,
    headlines: &[&'static str],
    mut scenario: F,
) where
    F: FnMut(&tokio::runtime::Runtime, &Setup, &mut Server) -> Result<Vec<Metric>, String>,
{
    let rounds: usize = env_or("BENCH_ROUNDS", 1usize).max(1);
    let rt = setup.runtime();
    let mut all: Vec<Vec<Outcome>> = Vec::new();
    for round in 1..=rounds {
        let mut outcomes = Vec::new();
        for plan in plan(bench) {
            outcomes.push(run_target(bench, &plan, setup, &rt, &mut scenario));
        }
        if rounds > 1 {
            print_round(round, rounds, headlines, &outcomes);
        }
        all.push(outcomes);
    }
    drop(rt);
    if rounds == 1 {
        let outcomes = all.pop().unwrap_or_default();
        report(bench, title, config, setup, &outcomes);
        return;
    }
    config["rounds"] = json!(rounds);
    config["per_round"] = per_round_json(&all);
    config["round_ratios"] = print_round_ratios(headlines, &all);
    let title = format!("{title}; median of {rounds} rounds");
    report(bench, &title, config, setup, &median_outcomes(&all));
}

/// Starts one target, runs the scenario on it, stops it.
fn run_target<F>(
    bench: &str,
    plan: &Plan,
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
    scenario: &mut F,
) -> Outcome
where
    F: FnMut(&tokio::runtime::Runtime, &Setup, &mut Server) -> Result<Vec<Metric>, String>,
{
    eprintln!("{bench}: starting {}", plan.kind.label());
    match Server::start(plan, setup, rt) {
        Ok(mut server) => {
            eprintln!(
                "{bench}: {} at {} ({})",
                plan.kind.label(),
                server.url,
                server.describe
            );
            let result = scenario(rt, setup, &mut server);
            if let Err(e) = &result {
                eprintln!("{bench}: {} failed: {e}", plan.kind.label());
                server.print_log_tail();
            }
            let o = Outcome {
                kind: plan.kind,
                url: server.url.clone(),
                describe: server.describe.clone(),
                result,
            };
            server.stop();
            o
        }
        Err(e) => {
            eprintln!("{bench}: {} unavailable: {e}", plan.kind.label());
            Outcome {
                kind: plan.kind,
                url: plan.url.clone().unwrap_or_default(),
                describe: "not started".into(),
                result: Err(e),
            }
        }
    }
}

/// One line per headline metric of a round: each target's value and the ratio.
fn print_round(round: usize, rounds: usize, headlines: &[&str], outcomes: &[Outcome]) {
    for &name in headlines {
        let (h, b) = (
            value(outcomes, Kind::Holdfast, name),
            value(outcomes, Kind::Baseline, name),
        );
        let unit = [Kind::Holdfast, Kind::Baseline]
            .into_iter()
            .find_map(|k| metric_of(outcomes, k, name))
            .map_or("", |m| m.unit);
        println!(
            "round {round}/{rounds}: {:<40} {:>12} {:>12} {:>7}",
            format!("{name} ({unit})"),
            fmt_value(h),
            fmt_value(b),
            ratio(h, b).map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
        );
    }
}

/// Metric `name` of target `kind` in one round's outcomes.
fn metric_of<'a>(outcomes: &'a [Outcome], kind: Kind, name: &str) -> Option<&'a Metric> {
    outcomes
        .iter()
        .filter(|o| o.kind == kind)
        .flat_map(|o| o.result.iter().flatten())
        .find(|m| m.name == name)
}

/// The value of metric `name` of target `kind`, if measured.
fn value(outcomes: &[Outcome], kind: Kind, name: &str) -> Option<f64> {
    metric_of(outcomes, kind, name).and_then(|m| m.value)
}

/// holdfast / baseline, when both exist and the baseline is not 0.
fn ratio(holdfast: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (holdfast, baseline) {
        (Some(h), Some(b)) if b != 0.0 => Some(h / b),
        _ => None,
    }
}

/// Each headline metric's ratio in every round and their median: what to
/// read when the machine's speed drifts between rounds (the table's ratio
/// is of the medians, which drift moves apart).
fn print_round_ratios(headlines: &[&str], all: &[Vec<Outcome>]) -> Value {
    let mut out = serde_json::Map::new();
    for &name in headlines {
        let ratios: Vec<f64> = all
            .iter()
            .filter_map(|outcomes| {
                ratio(
                    value(outcomes, Kind::Holdfast, name),
                    value(outcomes, Kind::Baseline, name),
                )
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let mid = median(ratios);
        println!(
            "{name}: ratio per round {}; median {}",
            listed.join(", "),
            mid.map_or_else(|| "-".into(), |m| format!("{m:.2}x"))
        );
        out.insert(name.to_owned(), json!({"per_round": listed, "median": mid}));
    }
    Value::Object(out)
}

/// Every round's value of every metric, by target.
fn per_round_json(all: &[Vec<Outcome>]) -> Value {
    let rounds: Vec<Value> = all
        .iter()
        .map(|outcomes| {
            let targets: serde_json::Map<String, Value> = outcomes
                .iter()
                .map(|o| {
                    let metrics: serde_json::Map<String, Value> = o
                        .result
                        .iter()
                        .flatten()
                        .map(|m| (m.name.to_owned(), json!(m.value)))
                        .collect();
                    (o.kind.label().to_owned(), Value::Object(metrics))
                })
                .collect();
            Value::Object(targets)
        })
        .collect();
    Value::Array(rounds)
}

/// One outcome per target: each metric's median over the rounds that
/// produced it, but for counts of failures (lost, duplicated, errors…) and
/// the CPU that went to neither process, which take the worst round, so
/// that one bad or disturbed round is never hidden; an error only if no
/// round of that target did.
fn median_outcomes(all: &[Vec<Outcome>]) -> Vec<Outcome> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|o| {
            let runs: Vec<&Outcome> = all
                .iter()
                .flat_map(|round| round.iter().filter(|x| x.kind == o.kind))
                .collect();
            let ok: Vec<&Vec<Metric>> =
                runs.iter().filter_map(|r| r.result.as_ref().ok()).collect();
            let result = match ok.first() {
                None => o.result.clone(),
                Some(template) => Ok(template
                    .iter()
                    .map(|m| {
                        let values: Vec<f64> = ok
                            .iter()
                            .filter_map(|ms| ms.iter().find(|x| x.name == m.name))
                            .filter_map(|x| x.value)
                            .collect();
                        // Failures, and the disturbance `report` warns of: the worst round.
                        let worst = (m.better == Better::Lower && m.unit == "count")
                            || m.name.ends_with(OTHER_CPU);
                        let v = if worst {
                            values.into_iter().reduce(f64::max)
                        } else {
                            median(values)
                        };
                        metric(m.name, m.unit, m.better, v)
                    })
                    .collect()),
            };
            Outcome {
                kind: o.kind,
                url: o.url.clone(),
                describe: format!(
                    "{}; {} of {} rounds with figures",
                    o.describe,
                    ok.len(),
                    runs.len()
                ),
                result,
            }
        })
        .collect()
}

/// The median (the mean of the middle two for an even count).
fn median(mut sorted: Vec<f64>) -> Option<f64> {
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}
