//! The baseline the load tests compare Holdfast with: a minimal WebSocket
//! server with no framework (tokio + tokio-tungstenite), speaking the subset
//! of `shared/PROTOCOL.md` that the load tests use.
//!
//! - On connect: `welcome`.
//! - `join` → `joined` (the room's latest offset, a per-process epoch).
//! - `leave` → `left`.
//! - `publish` → the next per-room offset (from 1, +1 each), `ack` to the
//!   publisher and `message` to every member, the publisher included. The
//!   `message` frame is serialized once and its bytes shared by every member's
//!   queue (`Utf8Bytes` is reference-counted).
//! - `ping` → `pong`; a binary frame → `error` `unsupported`; anything else
//!   → `error` `bad_request`.
//!
//! Meant to be a fair reference, not a straw man: a multi-threaded runtime,
//! one reader task and one writer task per connection, an unbounded queue per
//! connection that the writer drains in batches (one flush per batch), and a
//! lock per room taken only to assign an offset and enqueue the frame, which
//! also keeps every member's order equal to offset order. What it leaves out
//! (so a reader knows what the comparison does not charge it for): tokens,
//! presence, resume and history, heartbeats, rate limits, outbound limits and
//! slow-consumer detection, graceful drain (SIGTERM simply ends it).
//!
//! It runs as a mode of the bench binaries themselves: with
//! `HOLDFAST_BASELINE_LISTEN=host:port` set, [`serve_if_asked`] never returns,
//! so the benches spawn it as a separate process that `taskset` can pin.
//!
//! `BASELINE_RUNTIME=current_thread` runs it on tokio's single-threaded
//! scheduler instead, the kind of runtime actix-rt gives every actix-web
//! worker (tasks run in wake order; the multi-threaded scheduler runs the
//! task woken last first, from its LIFO slot). Against that baseline the
//! comparison shows what the runtime Holdfast must use costs, apart from
//! what Holdfast itself does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Set to `host:port` to make a bench binary the baseline server.
pub const LISTEN_ENV: &str = "HOLDFAST_BASELINE_LISTEN";

/// `current_thread` for tokio's single-threaded scheduler; anything else
/// (or unset): the multi-threaded one.
pub const RUNTIME_ENV: &str = "BASELINE_RUNTIME";

/// Whether [`RUNTIME_ENV`] asks for the single-threaded scheduler.
pub fn current_thread() -> bool {
    std::env::var(RUNTIME_ENV).is_ok_and(|v| v == "current_thread")
}

/// Same as Holdfast's default `max_frame_bytes`.
const MAX_FRAME_BYTES: usize = 65536;

/// Listen backlog: a burst of thousands of connects must not overflow it.
const BACKLOG: u32 = 4096;

/// Per-connection read buffer; the default (128 KiB) would make the
/// per-connection memory figure meaningless.
const READ_BUFFER_BYTES: usize = 4096;

/// If [`LISTEN_ENV`] is set, serve forever (the process ends by a signal);
/// otherwise return at once.
pub fn serve_if_asked() {
    if let Ok(addr) = std::env::var(LISTEN_ENV) {
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("{LISTEN_ENV}={addr}: {e}"));
        serve(addr);
    }
}

fn serve(addr: SocketAddr) -> ! {
    let mut builder = if current_thread() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder
        .enable_all()
        .build()
        .expect("baseline: tokio runtime");
    rt.block_on(async move {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .expect("baseline: socket");
        socket.set_reuseaddr(true).expect("baseline: SO_REUSEADDR");
        socket
            .bind(addr)
            .unwrap_or_else(|e| panic!("baseline: bind {addr}: {e}"));
        let listener = socket.listen(BACKLOG).expect("baseline: listen");
        let hub = Arc::new(Hub::new());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, hub.clone()));
                }
                // Out of descriptors or a reset before accept: keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
}

/// Every room, and what makes session and user ids unique.
struct Hub {
    /// Rooms by name; a room is created by its first `join` and kept.
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    /// Next connection number (user `u-N`, session id suffix).
    next_conn: AtomicU64,
    /// This process's epoch: offsets restart with the process.
    epoch: String,
}

/// One room: its latest offset and its members' outbound queues.
struct Room {
    /// Offset of the latest message; 0 before the first.
    offset: u64,
    /// Outbound queue of each member connection, by connection number.
    members: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

impl Hub {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            rooms: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            epoch: format!("{nanos:x}"),
        }
    }

    fn room(&self, name: &str) -> Arc<Mutex<Room>> {
        // Poisoning needs a panic while locked; nothing here panics.
        let mut rooms = self.rooms.lock().unwrap();
        rooms
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Room {
                    offset: 0,
                    members: HashMap::new(),
                }))
            })
            .clone()
    }
}

/// One connection's state, owned by its reader task.
struct Conn {
    /// Connection number, the key in each room's member map.
    id: u64,
    /// `from` of the messages it publishes, as a JSON string literal.
    user_json: String,
    /// Its outbound queue, drained by its writer task.
    tx: mpsc::UnboundedSender<Message>,
    /// Rooms it has joined, so that publish needs no hub lock.
    joined: HashMap<String, Arc<Mutex<Room>>>,
}

async fn connection(stream: TcpStream, hub: Arc<Hub>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });

    let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let user = format!("u-{id}");
    let mut conn = Conn {
        id,
        user_json: format!("\"{user}\""),
        tx,
        joined: HashMap::new(),
    };
    conn.send(format!(
        r#"{{"type":"welcome","session":"{}-{id:x}","user":"{user}","heartbeat_ms":15000,"max_frame_bytes":{MAX_FRAME_BYTES}}}"#,
        hub.epoch
    ));
    while let Some(Ok(frame)) = source.next().await {
        match frame {
            Message::Text(text) => conn.request(&hub, text.as_str()),
            Message::Binary(_) => {
                conn.error("null", "unsupported", "binary frames are not supported")
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    for room in conn.joined.values() {
        room.lock().unwrap().members.remove(&conn.id);
    }
    // The last sender is gone once the rooms forgot this connection: the
    // writer drains what is queued and ends.
    drop(conn);
    let _ = writer.await;
}

impl Conn {
    fn send(&self, frame: String) {
        let _ = self.tx.send(Message::Text(Utf8Bytes::from(frame)));
    }

    fn error(&self, id: &str, code: &str, message: &str) {
        self.send(format!(
            r#"{{"type":"error","id":{id},"code":"{code}","message":"{message}"}}"#
        ));
    }

    fn request(&mut self, hub: &Hub, text: &str) {
        let Ok(Value::Object(req)) = serde_json::from_str::<Value>(text) else {
            return self.error("null", "bad_request", "not a JSON object");
        };
        let id = req
            .get("id")
            .map_or_else(|| "null".to_owned(), Value::to_string);
        let room = req.get("room").and_then(Value::as_str);
        match req.get("type").and_then(Value::as_str) {
            Some("ping") => self.send(format!(r#"{{"type":"pong","id":{id}}}"#)),
            Some("join") => {
                let Some(name) = room.filter(|r| valid_room(r)) else {
                    return self.error(&id, "invalid_room", "bad room name");
                };
                let room = hub.room(name);
                let offset = {
                    let mut r = room.lock().unwrap();
                    r.members.insert(self.id, self.tx.clone());
                    r.offset
                };
                self.joined.insert(name.to_owned(), room);
                self.send(format!(
                    r#"{{"type":"joined","room":"{name}","offset":{offset},"epoch":"{}","id":{id}}}"#,
                    hub.epoch
                ));
            }
            Some("leave") => {
                let Some(name) = room.filter(|r| valid_room(r)) else {
                    return self.error(&id, "invalid_room", "bad room name");
                };
                if let Some(room) = self.joined.remove(name) {
                    room.lock().unwrap().members.remove(&self.id);
                }
                self.send(format!(r#"{{"type":"left","room":"{name}","id":{id}}}"#));
            }
            Some("publish") => {
                let Some(name) = room.filter(|r| valid_room(r)) else {
                    return self.error(&id, "invalid_room", "bad room name");
                };
                let Some(data) = req.get("data") else {
                    return self.error(&id, "bad_request", "publish needs data");
                };
                let Some(room) = self.joined.get(name) else {
                    return self.error(&id, "not_member", "join the room before publishing to it");
                };
                let offset = {
                    let mut r = room.lock().unwrap();
                    r.offset += 1;
                    let frame = Message::Text(Utf8Bytes::from(format!(
                        r#"{{"type":"message","room":"{name}","offset":{},"from":{},"data":{data}}}"#,
                        r.offset, self.user_json
                    )));
                    for member in r.members.values() {
                        let _ = member.send(frame.clone());
                    }
                    r.offset
                };
                self.send(format!(
                    r#"{{"type":"ack","room":"{name}","offset":{offset},"id":{id}}}"#
                ));
            }
            _ => self.error(&id, "bad_request", "unknown or missing type"),
        }
    }
}

/// `[A-Za-z0-9_.:-]{1,128}`: also means the name needs no JSON escaping.
fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}
