//! A fake HTTP server (trending feeds, OctoPrint), on a thread and runtime
//! of its own, so that a reply it holds back never holds back the server
//! under test. Replies are scripted per route: the path for a `GET`,
//! `METHOD path` for anything else (`POST /api/job`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One reply of the fake.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Held back this long before it is written.
    pub delay: Duration,
}

impl Reply {
    pub fn json(v: Value) -> Self {
        Self::raw(200, v.to_string())
    }

    pub fn status(status: u16) -> Self {
        Self::raw(status, json!({"error": status}).to_string())
    }

    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub at: Instant,
    pub api_key: Option<String>,
    /// `GET`, `POST`, …
    pub method: String,
    /// The request's body, as JSON (`null` when it had none).
    pub body: Value,
}

#[derive(Default)]
struct FakeState {
    /// Replies per path, used up in order...
    scripts: HashMap<String, VecDeque<Reply>>,
    /// ...then this one, again and again.
    defaults: HashMap<String, Reply>,
    seen: Vec<Seen>,
    connections: usize,
}

pub struct Fake {
    pub addr: SocketAddr,
    /// `http` or `https`.
    scheme: &'static str,
    state: Arc<Mutex<FakeState>>,
    gate: tokio::sync::watch::Sender<bool>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fake {
    /// A fake answering every request; with `gated`, replies wait for `open`.
    pub fn start(gated: bool) -> Fake {
        Self::launch(gated, None)
    }

    /// The same over TLS, with the certificate `tls` serves (`https://` URLs).
    pub fn start_tls(gated: bool, tls: tokio_rustls::TlsAcceptor) -> Fake {
        Self::launch(gated, Some(tls))
    }

    fn launch(gated: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Fake {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let (gate, gate_rx) = tokio::sync::watch::channel(!gated);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    while let Ok((stream, _)) = listener.accept().await {
                        shared.lock().unwrap().connections += 1;
                        let (state, gate) = (shared.clone(), gate_rx.clone());
                        match tls.clone() {
                            None => {
                                tokio::spawn(serve(stream, state, gate));
                            }
                            Some(tls) => {
                                tokio::spawn(async move {
                                    // A client that refuses the certificate ends here.
                                    if let Ok(stream) = tls.accept(stream).await {
                                        serve(stream, state, gate).await;
                                    }
                                });
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        Fake {
            addr,
            scheme,
            state,
            gate,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Replies to `path` with `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        let mut s = self.state.lock().unwrap();
        s.scripts.remove(path);
        s.defaults.insert(path.into(), reply);
    }

    /// Replies to `path` with these, in order, then with the default.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path.into(), replies.into());
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        let s = self.state.lock().unwrap();
        s.seen.iter().filter(|r| r.path == path).cloned().collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }
}

/// Serves one connection (TCP, or TLS over it): HTTP/1.1, kept alive.
async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    state: Arc<Mutex<FakeState>>,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or("GET").to_owned();
        let path = words.next().unwrap_or("/").to_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let api_key = header("x-api-key");
        let length: usize = header("content-length").map_or(0, |n| n.parse().unwrap_or(0));
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let route = if method == "GET" {
            path.clone()
        } else {
            format!("{method} {path}")
        };
        state.lock().unwrap().seen.push(Seen {
            path: route.clone(),
            at: Instant::now(),
            api_key,
            method,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let reply = {
            let mut s = state.lock().unwrap();
            let scripted = s.scripts.get_mut(&route).and_then(VecDeque::pop_front);
            scripted
                .or_else(|| s.defaults.get(&route).cloned())
                .unwrap_or_else(|| Reply::status(404))
        };
        tokio::time::sleep(reply.delay).await;
        let mut out = format!(
            "HTTP/1.1 {} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if stream.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// OctoPrint's answers, as the fake gives them
// ---------------------------------------------------------------------------

/// `GET /api/printer` of a printer printing, or idle, or in error.
pub fn printer(text: &str, printing: bool, error: bool) -> Reply {
    Reply::json(json!({
        "state": {
            "text": text,
            "flags": {
                "operational": !error, "printing": printing, "paused": false, "pausing": false,
                "cancelling": false, "error": error, "ready": !printing, "closedOrError": error,
                "sdReady": false,
            }
        },
        "temperature": {"tool0": {"actual": 214.8, "target": 215.0}, "bed": {"actual": 60.1, "target": 60.0}}
    }))
}

/// `GET /api/printer` of a paused printer.
pub fn paused(text: &str) -> Reply {
    Reply::json(json!({
        "state": {
            "text": text,
            "flags": {
                "operational": true, "printing": false, "paused": true, "pausing": false,
                "cancelling": false, "error": false, "ready": false, "closedOrError": false,
            }
        }
    }))
}

/// `GET /api/job` while `file` prints, `completion` percent done.
pub fn job(file: &str, completion: f64) -> Reply {
    Reply::json(json!({
        "job": {"file": {"name": file, "origin": "local"}, "estimatedPrintTime": 3600},
        "progress": {"completion": completion, "printTime": 600, "printTimeLeft": 3000},
        "state": "Printing"
    }))
}
