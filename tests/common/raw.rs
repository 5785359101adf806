//! A WebSocket client over a bare TCP socket, for the transport tests: it
//! writes the bytes it is told to, split as it is told to, and reads
//! frames as they come, so that a test controls what the server's driver
//! sees (small reads, half-closes, a reader that stalls).
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade request for `/ws` (path `path`), as a client sends it.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// A masked client frame with this opcode and payload.
pub use super::client_frame::masked as frame;

/// A text frame of `v`.
pub fn text(v: &Value) -> Vec<u8> {
    frame(0x1, v.to_string().as_bytes())
}

/// A server frame as read.
#[derive(Debug)]
pub enum Frame {
    Text(Value),
    Close(u16),
    Other(u8),
}

pub struct Raw {
    pub socket: TcpStream,
    /// Read, not yet a whole frame.
    buf: Vec<u8>,
}

impl Raw {
    /// Connects and sends `request` (an upgrade request, or anything else).
    pub async fn send_request(addr: std::net::SocketAddr, request: &[u8]) -> Self {
        let socket = TcpStream::connect(addr).await.expect("connect");
        Self::over(socket, request).await
    }

    /// Sends `request` over `socket`, connected already.
    pub async fn over(mut socket: TcpStream, request: &[u8]) -> Self {
        socket.set_nodelay(true).unwrap();
        socket.write_all(request).await.expect("request written");
        Self {
            socket,
            buf: Vec::new(),
        }
    }

    /// Connects to `/ws` and reads the 101 and `welcome`.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self::connect_with(addr, &[]).await
    }

    /// Connects to `/ws`, `after` sent in the same write as the request;
    /// reads the 101 and `welcome`.
    pub async fn connect_with(addr: std::net::SocketAddr, after: &[u8]) -> Self {
        let socket = TcpStream::connect(addr).await.expect("connect");
        Self::upgrade(socket, after).await
    }

    /// Upgrades `socket` (connected already) to `/ws`, `after` sent in the
    /// same write as the request; reads the 101 and `welcome`.
    pub async fn upgrade(socket: TcpStream, after: &[u8]) -> Self {
        let mut request = upgrade_request("/ws").into_bytes();
        request.extend_from_slice(after);
        let mut raw = Self::over(socket, &request).await;
        let head = raw.head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        match raw.next().await {
            Some(Frame::Text(welcome)) if welcome["type"] == "welcome" => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        raw
    }

    /// Reads the HTTP response head (and the body, when it says how long).
    pub async fn head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            assert!(self.fill().await > 0, "closed before the response head");
        }
    }

    /// Reads until `bytes` came (and keeps them); panics if the connection
    /// closes or stays silent for [`FRAME_TIMEOUT`] first.
    pub async fn read_until(&mut self, bytes: &[u8]) {
        while !self.buf.windows(bytes.len()).any(|w| w == bytes) {
            assert!(
                self.fill().await > 0,
                "closed before {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Reads until the server closes the connection; answers what came.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Writes `bytes` as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("written");
    }

    /// The next server frame; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, len)) = parse(&self.buf) {
                self.buf.drain(..len);
                return Some(frame);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// The next text frame, skipping pings; panics on anything else.
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next().await {
                Some(Frame::Text(v)) => return v,
                Some(Frame::Other(0x9)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The close code the server ends with, skipping other frames.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await? {
                Frame::Close(code) => return Some(code),
                _ => continue,
            }
        }
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(FRAME_TIMEOUT, self.socket.read(&mut chunk))
            .await
            .expect("the server answers within the timeout")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }
}

/// A whole unmasked server frame at the start of `buf`, with its length.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    let opcode = buf.first()? & 0x0f;
    let (start, len) = match buf.get(1)? & 0x7f {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
        ),
        127 => (
            10,
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, usize::from(n)),
    };
    let payload = buf.get(start..start + len)?;
    let frame = match opcode {
        0x1 => Frame::Text(serde_json::from_slice(payload).expect("a JSON text frame")),
        0x8 => Frame::Close(
            payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
        ),
        op => Frame::Other(op),
    };
    Some((frame, start + len))
}
