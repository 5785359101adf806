//! A real WebSocket client for the protocol tests.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

/// Connects to `/ws` with optional extra headers; answers the HTTP status on refusal.
pub async fn try_connect(
    addr: std::net::SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, u16> {
    let mut req = format!("ws://{addr}/ws{query}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            let mut c = Client {
                ws,
                welcome: Value::Null,
            };
            c.welcome = c.recv().await;
            assert_eq!(c.welcome["type"], "welcome", "{}", c.welcome);
            Ok(c)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// An HS256 token for `sub` signed with `secret`, valid for ten minutes,
/// with the claims of `extra` besides.
pub fn token(secret: &str, sub: &str, extra: Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = json!({"sub": sub, "exp": exp});
    if let Some(extra) = extra.as_object() {
        claims.as_object_mut().unwrap().extend(extra.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A client connected as `sub` (see [`token`]).
pub async fn connect_as(
    addr: std::net::SocketAddr,
    secret: &str,
    sub: &str,
    extra: Value,
) -> Client {
    let query = format!("?token={}", token(secret, sub, extra));
    try_connect(addr, &query, &[])
        .await
        .expect("upgrade accepted")
}

pub async fn connect(addr: std::net::SocketAddr) -> Client {
    try_connect(addr, "", &[]).await.expect("upgrade accepted")
}

impl Client {
    pub fn session(&self) -> String {
        self.welcome["session"].as_str().unwrap().to_owned()
    }

    pub fn user(&self) -> String {
        self.welcome["user"].as_str().unwrap().to_owned()
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next text frame as JSON; panics on close, binary, or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(FRAME_TIMEOUT, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON text frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame that is not a room event (`message`, `presence_diff`,
    /// `epoch`): a reply or an error.
    pub async fn recv_reply(&mut self) -> Value {
        loop {
            let v = self.recv().await;
            if !matches!(
                v["type"].as_str(),
                Some("message" | "presence_diff" | "epoch")
            ) {
                return v;
            }
        }
    }

    /// Sends a request and returns its reply (skipping interleaved messages).
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv_reply().await
    }

    /// Reads until `n` acks came, skipping the messages of rooms it is in
    /// (a publisher member gets its own); panics on anything else.
    pub async fn acks(&mut self, n: usize) {
        let mut acked = 0;
        while acked < n {
            let v = self.recv().await;
            match v["type"].as_str() {
                Some("ack") => acked += 1,
                Some("message") => {}
                // Not the frame itself: it may hold a large `data`.
                other => panic!("not an ack: {other:?}, code {}", v["code"]),
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        let reply = self
            .request(json!({"type": "join", "room": room, "id": format!("j-{room}")}))
            .await;
        assert_eq!(reply["type"], "joined", "{reply}");
        reply
    }

    /// Reads until a close frame; answers its code (1006 if the socket just ended).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(FRAME_TIMEOUT * 3, self.ws.next())
                .await
                .expect("close within the timeout")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame
                        .map(|f| u16::from(f.code))
                        .unwrap_or(u16::from(CloseCode::Status));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }
}
