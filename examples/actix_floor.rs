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
//! Against the baseline, both started by hand on CPU 0 (the baseline is a
//! mode of any bench binary, see the README):
//!
//! ```sh
//! cargo build --release --example actix_floor && cargo bench --no-run --bench fanout
//! taskset -c 0 target/release/examples/actix_floor 127.0.0.1:9002 & FLOOR=$!
//! HOLDFAST_BASELINE_LISTEN=127.0.0.1:9001 taskset -c 0 target/release/deps/fanout-<hash> & BASE=$!
//! FANOUT_URL=ws://127.0.0.1:9002/ws SERVER_PID=$FLOOR \
//!   BASELINE_URL=ws://127.0.0.1:9001/ws BASELINE_PID=$BASE \
//!   CLIENT_CPUS=1 cargo bench --bench fanout
//! ```

#[path = "../benches/baseline/protocol.rs"]
mod protocol;

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::Message;
use bytestring::ByteString;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use protocol::{Conn, Hub, MAX_FRAME_BYTES};

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub<ByteString>>,
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
        let mut conn = Conn::new(&hub, tx);
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
        conn.leave_all();
    });
    Ok(response)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let hub = web::Data::new(Hub::<ByteString>::new("floor".into()));
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
