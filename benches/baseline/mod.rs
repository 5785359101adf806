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

mod protocol;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use protocol::{Conn, Hub, MAX_FRAME_BYTES};

/// Set to `host:port` to make a bench binary the baseline server.
pub const LISTEN_ENV: &str = "HOLDFAST_BASELINE_LISTEN";

/// `current_thread` for tokio's single-threaded scheduler; anything else
/// (or unset): the multi-threaded one.
pub const RUNTIME_ENV: &str = "BASELINE_RUNTIME";

/// Whether [`RUNTIME_ENV`] asks for the single-threaded scheduler.
pub fn current_thread() -> bool {
    std::env::var(RUNTIME_ENV).is_ok_and(|v| v == "current_thread")
}

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
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let hub = Arc::new(Hub::new(format!("{nanos:x}")));
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

async fn connection(stream: TcpStream, hub: Arc<Hub<Message>>) {
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

    let mut conn = Conn::new(&hub, tx);
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
    // The last sender is gone once the rooms forgot this connection: the
    // writer drains what is queued and ends.
    conn.leave_all();
    let _ = writer.await;
}
