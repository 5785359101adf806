//! The actix floor: the smallest WebSocket server on the HTTP stack Holdfast
//! is built on (actix-web and its HTTP/1 dispatcher, with `actix-ws` in place
//! of actors), speaking the protocol subset of the load tests' baseline
//! (`benches/baseline`: welcome, join, leave, publish/ack/message, ping). It
//! is built like that baseline (one outbound channel and writer per
//! connection; a publish pushes one shared frame to every member), so that
//! the load tests can tell what the stack costs by itself from what Holdfast
//! adds on top of it. Not part of Holdfast: no auth, history, heartbeats,
//! limits or drain.
//!
//! ```sh
//! taskset -c 0 cargo run --release --example actix_floor -- 127.0.0.1:9002 &
//! FANOUT_URL=ws://127.0.0.1:9002/ws SERVER_PID=$(pgrep -n actix_floor) \
//!   CLIENT_CPUS=1 cargo bench --bench fanout
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::Message;
use bytestring::ByteString;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

/// Largest frame accepted, as Holdfast's default `ws.max_frame_bytes`.
const MAX_FRAME_BYTES: usize = 65536;

/// Every room, and the next connection number.
#[derive(Default)]
struct Hub {
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
    next_conn: AtomicU64,
}

/// One room: its latest offset and its members' outbound channels.
#[derive(Default)]
struct Room {
    offset: u64,
    members: HashMap<u64, mpsc::UnboundedSender<ByteString>>,
}

/// One connection, owned by its reader task.
struct Conn {
    id: u64,
    /// `from` of its messages, as a JSON string literal.
    user_json: String,
    tx: mpsc::UnboundedSender<ByteString>,
    joined: HashMap<String, Arc<Mutex<Room>>>,
}

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream.max_frame_size(MAX_FRAME_BYTES);
    let (tx, mut rx) = mpsc::unbounded_channel::<ByteString>();
    let mut writer = session.clone();
    actix_web::rt::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if writer.text(frame).await.is_err() {
                return;
            }
        }
        let _ = writer.close(None).await;
    });
    let hub = hub.into_inner();
    let mut session = session;
    actix_web::rt::spawn(async move {
        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn {
            id,
            user_json: format!("\"u-{id}\""),
            tx,
            joined: HashMap::new(),
        };
        conn.send(format!(
            r#"{{"type":"welcome","session":"floor-{id:x}","user":"u-{id}","heartbeat_ms":15000,"max_frame_bytes":{MAX_FRAME_BYTES}}}"#
        ));
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(text) => conn.request(&hub, &text),
                Message::Binary(_) => {
                    conn.error("null", "unsupported", "binary frames are not supported")
                }
                Message::Ping(bytes) => {
                    let _ = session.pong(&bytes).await;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        for room in conn.joined.values() {
            room.lock().unwrap().members.remove(&conn.id);
        }
    });
    Ok(response)
}

impl Conn {
    fn send(&self, frame: String) {
        let _ = self.tx.send(frame.into());
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
        let Some(name) = req
            .get("room")
            .and_then(Value::as_str)
            .filter(|r| valid_room(r))
        else {
            return match req.get("type").and_then(Value::as_str) {
                Some("ping") => self.send(format!(r#"{{"type":"pong","id":{id}}}"#)),
                _ => self.error(&id, "bad_request", "unknown type or bad room"),
            };
        };
        match req.get("type").and_then(Value::as_str) {
            Some("join") => {
                let room = hub
                    .rooms
                    .lock()
                    .unwrap()
                    .entry(name.to_owned())
                    .or_default()
                    .clone();
                let offset = {
                    let mut r = room.lock().unwrap();
                    r.members.insert(self.id, self.tx.clone());
                    r.offset
                };
                self.joined.insert(name.to_owned(), room);
                self.send(format!(
                    r#"{{"type":"joined","room":"{name}","offset":{offset},"epoch":"floor","id":{id}}}"#
                ));
            }
            Some("leave") => {
                if let Some(room) = self.joined.remove(name) {
                    room.lock().unwrap().members.remove(&self.id);
                }
                self.send(format!(r#"{{"type":"left","room":"{name}","id":{id}}}"#));
            }
            Some("publish") => {
                let Some(data) = req.get("data") else {
                    return self.error(&id, "bad_request", "publish needs data");
                };
                let Some(room) = self.joined.get(name) else {
                    return self.error(&id, "not_member", "join the room before publishing");
                };
                let offset = {
                    let mut r = room.lock().unwrap();
                    r.offset += 1;
                    let frame = ByteString::from(format!(
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
}

/// `[A-Za-z0-9_.:-]{1,128}`: also means the name needs no JSON escaping.
fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let hub = web::Data::new(Hub::default());
    println!("actix floor on ws://{addr}/ws");
    HttpServer::new(move || {
        App::new()
            .app_data(hub.clone())
            .route("/ws", web::get().to(ws))
    })
    .tcp_nodelay(true)
    .backlog(4096)
    .max_connections(200_000)
    .bind(addr)?
    .run()
    .await
}
