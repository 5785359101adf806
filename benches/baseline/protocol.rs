//! The protocol subset of the load tests' reference servers: the baseline
//! (`benches/baseline`, tokio-tungstenite) and the actix floor
//! (`examples/actix_floor.rs`, which includes this file). Generic over the
//! frame type `F` each transport queues: built from a `String` once, and
//! cloned by reference count for every member of a room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

/// Same as Holdfast's default `max_frame_bytes`.
pub const MAX_FRAME_BYTES: usize = 65536;

/// Every room, and what makes session and user ids unique.
pub struct Hub<F> {
    /// Rooms by name; a room is created by its first `join` and kept.
    rooms: Mutex<HashMap<String, Arc<Mutex<Room<F>>>>>,
    /// Next connection number (user `u-N`, session id suffix).
    next_conn: AtomicU64,
    /// This process's epoch: offsets restart with the process.
    epoch: String,
}

/// One room: its latest offset and its members' outbound queues.
struct Room<F> {
    /// Offset of the latest message; 0 before the first.
    offset: u64,
    /// Outbound queue of each member connection, by connection number.
    members: HashMap<u64, mpsc::UnboundedSender<F>>,
}

impl<F> Hub<F> {
    pub fn new(epoch: String) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            epoch,
        }
    }

    fn room(&self, name: &str) -> Arc<Mutex<Room<F>>> {
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
pub struct Conn<F> {
    /// Connection number, the key in each room's member map.
    id: u64,
    /// `from` of the messages it publishes, as a JSON string literal.
    user_json: String,
    /// Its outbound queue, drained by its writer task.
    tx: mpsc::UnboundedSender<F>,
    /// Rooms it has joined, so that publish needs no hub lock.
    joined: HashMap<String, Arc<Mutex<Room<F>>>>,
}

impl<F: From<String> + Clone> Conn<F> {
    /// A new connection writing to `tx`; queues its `welcome`.
    pub fn new(hub: &Hub<F>, tx: mpsc::UnboundedSender<F>) -> Self {
        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        let user = format!("u-{id}");
        let conn = Conn {
            id,
            user_json: format!("\"{user}\""),
            tx,
            joined: HashMap::new(),
        };
        conn.send(format!(
            r#"{{"type":"welcome","session":"{}-{id:x}","user":"{user}","heartbeat_ms":15000,"max_frame_bytes":{MAX_FRAME_BYTES}}}"#,
            hub.epoch
        ));
        conn
    }

    fn send(&self, frame: String) {
        let _ = self.tx.send(F::from(frame));
    }

    pub fn error(&self, id: &str, code: &str, message: &str) {
        self.send(format!(
            r#"{{"type":"error","id":{id},"code":"{code}","message":"{message}"}}"#
        ));
    }

    pub fn request(&mut self, hub: &Hub<F>, text: &str) {
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
                    let frame = F::from(format!(
                        r#"{{"type":"message","room":"{name}","offset":{},"from":{},"data":{data}}}"#,
                        r.offset, self.user_json
                    ));
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

    /// Leaves every room (the connection ended); its queue's last sender
    /// goes with `self`.
    pub fn leave_all(self) {
        for room in self.joined.values() {
            room.lock().unwrap().members.remove(&self.id);
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
