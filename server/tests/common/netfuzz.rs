//! A network fuzzer for a live server, shared by `server/tests/netfuzz.rs`
//! (bounded) and `benches/netfuzz.rs` (longer): several connections throw
//! mutated, random and malformed WebSocket frames at `/ws` (every class the
//! outside test used: mutated and deeply nested JSON, oversized text,
//! fragments in and out of order, oversized and fragmented control frames,
//! binary, reserved bits, unknown opcodes, unmasked frames, bad close
//! codes, invalid UTF-8, raw garbage, ping floods); after each case a probe
//! `ping` with an id of its own must be answered, or the connection must
//! close with the close code that case calls for. Every request with an id
//! must be answered before the probe's pong. Nothing here knows the
//! server's code: it speaks RFC 6455 over a plain TCP socket.
#![allow(dead_code)]

use super::client_frame;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a case may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run measured; `failures()` lists what broke a rule.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub frames: u64,
    pub bytes: u64,
    pub connections: u64,
    /// Cases answered by the probe's pong (the connection stayed open).
    pub answered: u64,
    /// Cases that ended the connection with the expected close code.
    pub closed: HashMapCount,
    /// Requests with an id that got their answer before the probe's pong.
    pub requests_answered: u64,
    /// Raw garbage the server is still waiting on (an incomplete frame):
    /// the connection is dropped by the client.
    pub left_incomplete: u64,
    pub failures: Vec<String>,
}

/// Close codes and how often each came.
pub type HashMapCount = std::collections::BTreeMap<u16, u64>;

impl Report {
    pub fn print(&self, label: &str, elapsed: Duration) {
        println!(
            "{label}: {} cases, {} frames, {} bytes over {} connections in {:.1} s: {} answered, closed {:?}, \
             {} requests answered, {} left incomplete, {} failures",
            self.cases,
            self.frames,
            self.bytes,
            self.connections,
            elapsed.as_secs_f64(),
            self.answered,
            self.closed,
            self.requests_answered,
            self.left_incomplete,
            self.failures.len()
        );
        for f in self.failures.iter().take(10) {
            println!("  {f}");
        }
    }
}

/// xorshift64*: a run is repeatable from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `min` to `min + spread - 1` random bytes.
    fn some_bytes(&mut self, min: usize, spread: usize) -> Vec<u8> {
        let n = min + self.below(spread);
        self.bytes(n)
    }
}

/// One WebSocket frame from a client: masked unless told otherwise.
pub fn frame(opcode: u8, payload: &[u8], fin: bool) -> Vec<u8> {
    frame_with(opcode, payload, fin, true, 0)
}

fn frame_with(opcode: u8, payload: &[u8], fin: bool, masked: bool, rsv: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    let first = (u8::from(fin) << 7) | rsv | opcode;
    client_frame::encode(
        &mut out,
        first,
        payload,
        masked.then_some(client_frame::KEY),
    );
    out
}

fn text(v: &Value) -> Vec<u8> {
    frame(0x1, v.to_string().as_bytes(), true)
}

/// What the server must do with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Stay open and answer the probe.
    Answer,
    /// Close with this code.
    Close(u16),
    /// Close with any protocol-level code, or answer (mutations that may or
    /// may not still be valid).
    Either,
    /// Raw bytes: answer, close, or wait for the rest of a frame.
    Anything,
}

/// One case: the bytes, how many frames, which request ids need an answer.
struct Case {
    class: &'static str,
    bytes: Vec<u8>,
    frames: u64,
    ids: Vec<String>,
    expect: Expect,
}

const SEEDS: &[&str] = &[
    r#"{"type":"ping","id":"s1"}"#,
    r#"{"type":"join","room":"fuzz","id":"s2"}"#,
    r#"{"type":"publish","room":"fuzz","data":{"text":"hello","n":[1,2.5,null,true]},"id":"s3"}"#,
    r#"{"type":"leave","room":"fuzz","id":"s4"}"#,
    r#"{"type":"presence","room":"fuzz","id":"s5"}"#,
    r#"{"type":"history","room":"fuzz","since":0,"limit":10,"id":"s6"}"#,
    r#"{"type":"resume","session":"00000000-0000-4000-8000-000000000000","rooms":{"fuzz":3},"epochs":{"fuzz":"x"},"id":"s7"}"#,
    r#"{"type":"rpc","method":"nobody.nothing","params":{},"id":"s8"}"#,
    r#"{"type":"join","room":"$printers","id":"s9"}"#,
];

/// The ids a text asks to be answered: a JSON object with a string or
/// integer `id` and a string `type` (anything else may be refused without one).
fn request_id(text: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(text).ok()?;
    v.get("type")?.as_str()?;
    match v.get("id")? {
        Value::String(s) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => out.truncate(rng.below(out.len())),
            2 => {
                let i = rng.below(out.len() + 1);
                let b =
                    [b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', b'0', b'-'][rng.below(10)];
                out.insert(i, b);
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                let b = out[i];
                let n = rng.below(32);
                out.splice(i..i, std::iter::repeat_n(b, n));
            }
            _ if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    out
}

/// A case of a random class.
fn case(rng: &mut Rng, max_frame: usize) -> Case {
    let seed = SEEDS[rng.below(SEEDS.len())].as_bytes();
    let one = |class, bytes, expect| Case {
        class,
        bytes,
        frames: 1,
        ids: Vec::new(),
        expect,
    };
    match rng.below(17) {
        0..=4 => {
            let m = mutate(rng, seed);
            let valid_utf8 = std::str::from_utf8(&m).is_ok();
            let mut c = one(
                "mutated json",
                frame(0x1, &m, true),
                if valid_utf8 {
                    Expect::Answer
                } else {
                    Expect::Close(1007)
                },
            );
            if valid_utf8 {
                c.ids.extend(request_id(&m));
            }
            c
        }
        5 => {
            let depth = 65 + rng.below(20_000);
            let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let body = format!(r#"{{"type":"publish","room":"fuzz","data":{data},"id":"deep"}}"#);
            let expect = if body.len() > max_frame {
                Expect::Close(1009)
            } else {
                Expect::Answer
            };
            let mut c = one("deep nesting", frame(0x1, body.as_bytes(), true), expect);
            if expect == Expect::Answer {
                c.ids.push("deep".into());
            }
            c
        }
        6 => one(
            "oversized text",
            frame(0x1, &vec![b' '; max_frame + 1 + rng.below(1000)], true),
            Expect::Close(1009),
        ),
        7 => {
            // A request in 2..=6 fragments, a ping between two of them.
            let n = 2 + rng.below(5);
            let chunk = seed.len().div_ceil(n);
            let parts: Vec<&[u8]> = seed.chunks(chunk).collect();
            let mut bytes = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 { 0x1 } else { 0x0 };
                bytes.extend(frame(opcode, part, i + 1 == parts.len()));
                if i == 0 {
                    bytes.extend(frame(0x9, b"between", true));
                }
            }
            Case {
                class: "fragments",
                bytes,
                frames: parts.len() as u64 + 1,
                ids: request_id(seed).into_iter().collect(),
                expect: Expect::Answer,
            }
        }
        8 => {
            let mut bytes = frame(0x1, b"{\"type\":", false);
            bytes.extend(frame(0x1, b"{}", true)); // a new message inside one
            Case {
                class: "fragments out of order",
                bytes,
                frames: 2,
                ids: Vec::new(),
                expect: Expect::Close(1002),
            }
        }
        9 => one(
            "continuation outside a message",
            frame(0x0, b"stray", rng.below(2) == 0),
            Expect::Close(1002),
        ),
        10 => match rng.below(3) {
            0 => one(
                "oversized ping",
                frame(0x9, &rng.some_bytes(126, 200), true),
                Expect::Close(1002),
            ),
            1 => one(
                "fragmented ping",
                frame(0x9, b"frag", false),
                Expect::Close(1002),
            ),
            _ => {
                let n = 1 + rng.below(200);
                let mut bytes = Vec::new();
                for _ in 0..n {
                    bytes.extend(frame(0x9, &rng.bytes(125), true));
                }
                Case {
                    class: "ping flood",
                    bytes,
                    frames: n as u64,
                    ids: Vec::new(),
                    expect: Expect::Answer,
                }
            }
        },
        11 => one(
            "binary",
            frame(0x2, &rng.some_bytes(0, 300), true),
            Expect::Answer,
        ),
        12 => one(
            "reserved bits",
            frame_with(0x1, seed, true, true, [0x40, 0x20, 0x10][rng.below(3)]),
            Expect::Close(1002),
        ),
        13 => one(
            "unknown opcode",
            frame(
                [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf][rng.below(10)],
                b"",
                true,
            ),
            Expect::Close(1002),
        ),
        14 => one(
            "unmasked",
            frame_with(0x1, seed, true, false, 0),
            Expect::Close(1002),
        ),
        15 => {
            let code: u16 =
                [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535][rng.below(10)];
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(&mutate(rng, b"reason"));
            one(
                "close with a bad code",
                frame(0x8, &payload, true),
                Expect::Either,
            )
        }
        _ => {
            if rng.below(2) == 0 {
                let mut t = seed.to_vec();
                let i = rng.below(t.len());
                t[i] = [0xff, 0xc0, 0x80, 0xed][rng.below(4)];
                one("invalid utf-8", frame(0x1, &t, true), Expect::Close(1007))
            } else {
                one("raw garbage", rng.some_bytes(1, 64), Expect::Anything)
            }
        }
    }
}

/// A client connection speaking RFC 6455 from raw bytes.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One server frame.
enum Incoming {
    Text(Value),
    Close(u16),
    Other,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        stream.set_nodelay(true)?;
        write!(
            stream,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(end) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
                c.buf.drain(..end + 4);
                if !head.starts_with("HTTP/1.1 101") {
                    return Err(std::io::Error::other(format!("refused: {head}")));
                }
                break;
            }
            if Instant::now() > deadline || !c.fill()? {
                return Err(std::io::Error::other("no handshake answer"));
            }
        }
        match c.next(deadline)? {
            Some(Incoming::Text(v)) if v["type"] == "welcome" => Ok(c),
            _ => Err(std::io::Error::other("no welcome")),
        }
    }

    /// Reads what is there; false once the server closed the socket.
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next frame; `None` when the socket ended without a close frame
    /// or nothing came by `deadline`.
    fn next(&mut self, deadline: Instant) -> std::io::Result<Option<Incoming>> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            if Instant::now() > deadline || !self.fill()? {
                return Ok(None);
            }
        }
    }
}

/// A server frame at the start of `buf` (servers never mask), with the
/// bytes it took.
fn parse_server_frame(buf: &[u8]) -> Option<(Incoming, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, head) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(head..head + len)?;
    let frame = match opcode {
        0x1 => Incoming::Text(serde_json::from_slice(payload).unwrap_or(Value::Null)),
        0x8 => Incoming::Close(
            payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
        ),
        _ => Incoming::Other,
    };
    Some((frame, head + len))
}

/// How a case ended.
enum Outcome {
    Answered { ids_answered: u64 },
    Closed(u16),
    Silent,
}

fn run_case(conn: &mut Conn, case: &Case, probe: &str) -> std::io::Result<Outcome> {
    conn.stream.write_all(&case.bytes)?;
    let probe_frame = text(&json!({"type": "ping", "id": probe}));
    if conn.stream.write_all(&probe_frame).is_err() {
        // The server closed already: read what it said.
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    // Replies come in any order (a ping is answered at once, a join once
    // its room's hub has it): done when the probe and every request are.
    let mut waiting: Vec<String> = case.ids.clone();
    let mut probed = false;
    loop {
        if probed && waiting.is_empty() {
            return Ok(Outcome::Answered {
                ids_answered: case.ids.len() as u64,
            });
        }
        match conn.next(deadline)? {
            Some(Incoming::Text(v)) => {
                if v["type"] == "pong" && v["id"] == probe {
                    probed = true;
                    continue;
                }
                let id = match &v["id"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                waiting.retain(|w| *w != id);
            }
            Some(Incoming::Close(code)) => return Ok(Outcome::Closed(code)),
            Some(Incoming::Other) => {}
            None if probed => {
                return Err(std::io::Error::other(format!(
                    "{}: requests {waiting:?} never answered",
                    case.class
                )))
            }
            None => return Ok(Outcome::Silent),
        }
    }
}

/// Runs `cases` cases over `connections` connections at once against
/// `addr`; `alive` is asked between cases (liveness throughout) and must
/// answer true.
pub fn run(
    addr: &str,
    connections: usize,
    cases: u64,
    seed: u64,
    max_frame: usize,
    alive: &(dyn Fn() -> bool + Sync),
) -> Report {
    let report = Mutex::new(Report::default());
    let next = AtomicU64::new(0);
    let dead = AtomicBool::new(false);
    std::thread::scope(|s| {
        for worker in 0..connections {
            let (report, next, dead) = (&report, &next, &dead);
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (worker as u64 + 1).wrapping_mul(0x9e37_79b9));
                let mut conn: Option<Conn> = None;
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= cases || dead.load(Ordering::SeqCst) {
                        break;
                    }
                    if n % 500 == 0 && !alive() {
                        report.lock().unwrap().failures.push(format!("not alive at case {n}"));
                        dead.store(true, Ordering::SeqCst);
                        break;
                    }
                    let c = match conn.take() {
                        Some(c) => c,
                        None => match Conn::open(addr) {
                            Ok(c) => {
                                report.lock().unwrap().connections += 1;
                                c
                            }
                            Err(e) => {
                                report.lock().unwrap().failures.push(format!("connect: {e}"));
                                dead.store(true, Ordering::SeqCst);
                                break;
                            }
                        },
                    };
                    let mut c = c;
                    let case = case(&mut rng, max_frame);
                    let outcome = run_case(&mut c, &case, &format!("probe-{n}"));
                    let mut r = report.lock().unwrap();
                    r.cases += 1;
                    r.frames += case.frames + 1;
                    r.bytes += case.bytes.len() as u64;
                    match (outcome, case.expect) {
                        (Ok(Outcome::Answered { ids_answered }), Expect::Answer | Expect::Either | Expect::Anything) => {
                            r.answered += 1;
                            r.requests_answered += ids_answered;
                            conn = Some(c);
                        }
                        (Ok(Outcome::Closed(code)), Expect::Close(want)) if code == want => {
                            *r.closed.entry(code).or_default() += 1;
                        }
                        (Ok(Outcome::Closed(code)), Expect::Either | Expect::Anything)
                            if (1000..=1015).contains(&code) =>
                        {
                            *r.closed.entry(code).or_default() += 1;
                        }
                        (Ok(Outcome::Silent), Expect::Anything) => r.left_incomplete += 1,
                        (Ok(Outcome::Answered { .. }), want) => r
                            .failures
                            .push(format!("{}: answered, expected {want:?}", case.class)),
                        (Ok(Outcome::Closed(code)), want) => r.failures.push(format!(
                            "{}: closed with {code}, expected {want:?}",
                            case.class
                        )),
                        (Ok(Outcome::Silent), want) => r.failures.push(format!(
                            "{}: no answer and no close within {ANSWER_TIMEOUT:?}, expected {want:?}",
                            case.class
                        )),
                        (Err(e), _) => r.failures.push(format!("{}: {e}", case.class)),
                    }
                }
            });
        }
    });
    report.into_inner().unwrap()
}

/// The resident set of process `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
