//! WebSocket clients: the plain one (`connect`, `join`, `run_many`) and the raw one of the hot path (`RawWs`: frames parsed in place).

use super::*;

/// Host and port of a `ws://host:port/path` URL.
pub(crate) fn authority(url: &str) -> Result<&str, String> {
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
pub(crate) struct RawFrame {
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
        Self::connect_from(url, read_buffer, None).await
    }

    /// [`connect`](Self::connect) from the local address `source` (any port):
    /// one source address holds at most one ephemeral port range of
    /// connections to the server's address, about 28,000 by Linux's default.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); `source` cannot be bound.
    pub async fn connect_from(
        url: &str,
        read_buffer: usize,
        source: Option<std::net::IpAddr>,
    ) -> Result<RawWs, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = authority(url)?;
        let path = url["ws://".len() + host.len()..].to_owned();
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let mut stream = match source {
            None => TcpStream::connect(host).await,
            Some(ip) => {
                let addr: std::net::SocketAddr = host.parse().map_err(|e| format!("{url}: {e}"))?;
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                }
                .map_err(|e| format!("{url}: {e}"))?;
                // The port is picked at the connect, per destination, as for
                // a socket not bound: bound first, every socket of one source
                // address would need a port of its own, whatever it connects to.
                let one: libc::c_int = 1;
                // SAFETY: a valid socket, an int option, its size.
                let set = unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&socket),
                        libc::IPPROTO_IP,
                        libc::IP_BIND_ADDRESS_NO_PORT,
                        (&raw const one).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if set != 0 {
                    return Err(format!("{url}: {}", std::io::Error::last_os_error()));
                }
                socket
                    .bind((ip, 0).into())
                    .map_err(|e| format!("bind {ip}: {e}"))?;
                socket.connect(addr).await
            }
        }
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
        client_frame::encode(&mut frame, 0x80 | opcode, payload, Some(key));
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
