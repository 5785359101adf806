//! The servers the monitor tests control: a liveness endpoint, a webhook
//! receiver and a minimal SMTP server, each also over TLS.

use super::*;

/// A connection, plain TCP or TLS over it.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Accepts connections on `listener`, over TLS with `tls`, and hands each to
/// `handle` in a task of its own. A failed handshake just drops the connection.
pub(crate) fn accept_each<F, Fut>(listener: TcpListener, tls: Option<TlsAcceptor>, handle: F)
where
    F: Fn(Box<dyn Conn>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, handle) = (tls.clone(), handle.clone());
            tokio::spawn(async move {
                let conn: Box<dyn Conn> = match tls {
                    None => Box::new(tcp),
                    Some(tls) => match tls.accept(tcp).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => return,
                    },
                };
                handle(conn).await;
            });
        }
    });
}

/// `http` or `https`, as `tls` decides.
pub(crate) fn scheme(tls: &Option<TlsAcceptor>) -> &'static str {
    if tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body).
pub(crate) async fn read_request(
    stream: &mut (impl AsyncRead + Unpin),
) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

pub(crate) async fn respond(stream: &mut (impl AsyncWrite + Unpin), status: u16) {
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One answer of the liveness endpoint.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub(crate) status: u16,
    /// When, in ms since the epoch.
    pub(crate) at_ms: u64,
    /// Whether the first child recorded in the pid file was alive then.
    pub(crate) first_child_alive: bool,
}

/// A liveness endpoint that answers what the test sets, and records every answer.
#[derive(Clone)]
pub(crate) struct Liveness {
    pub(crate) url: String,
    pub(crate) status: Arc<AtomicU16>,
    pub(crate) served: Arc<Mutex<Vec<Served>>>,
}

impl Liveness {
    pub(crate) async fn start(pids: Option<PathBuf>) -> Liveness {
        Self::launch(pids, None).await
    }

    /// The same over TLS (an `https://` URL on 127.0.0.1).
    pub(crate) async fn start_tls(tls: TlsAcceptor) -> Liveness {
        Self::launch(None, Some(tls)).await
    }

    pub(crate) async fn launch(pids: Option<PathBuf>, tls: Option<TlsAcceptor>) -> Liveness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "{}://{}/health/live",
            scheme(&tls),
            listener.local_addr().unwrap()
        );
        let me = Liveness {
            url,
            status: Arc::new(AtomicU16::new(200)),
            served: Arc::default(),
        };
        let state = me.clone();
        accept_each(listener, tls, move |mut stream| {
            let state = state.clone();
            let pids = pids.clone();
            async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                let status = state.status.load(Ordering::SeqCst);
                let first_child_alive = pids
                    .as_deref()
                    .and_then(|p| starts(p).first().map(|s| alive(s.0)))
                    .unwrap_or(false);
                state.served.lock().unwrap().push(Served {
                    status,
                    at_ms: now_ms(),
                    first_child_alive,
                });
                respond(&mut stream, status).await;
            }
        });
        me
    }

    pub(crate) fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn served(&self) -> Vec<Served> {
        self.served.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.served.lock().unwrap().len()
    }
}

/// A webhook receiver: records every JSON body POSTed to it.
#[derive(Clone)]
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) alerts: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    pub(crate) async fn start(path: &str) -> Webhook {
        Self::launch(path, None).await
    }

    /// The same over TLS, at `https://localhost:{port}{path}` (so the
    /// certificate is checked against a host name).
    pub(crate) async fn start_tls(path: &str, tls: TlsAcceptor) -> Webhook {
        Self::launch(path, Some(tls)).await
    }

    pub(crate) async fn launch(path: &str, tls: Option<TlsAcceptor>) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = if tls.is_some() {
            format!("localhost:{}", listener.local_addr().unwrap().port())
        } else {
            listener.local_addr().unwrap().to_string()
        };
        let url = format!("{}://{host}{path}", scheme(&tls));
        let alerts: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = alerts.clone();
        accept_each(listener, tls, move |mut stream| {
            let sink = sink.clone();
            async move {
                if let Some((head, body)) = read_request(&mut stream).await {
                    assert!(head.starts_with("POST "), "{head}");
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).expect("a JSON alert"));
                }
                respond(&mut stream, 200).await;
            }
        });
        Webhook { url, alerts }
    }

    pub(crate) fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == kind)
            .cloned()
            .collect()
    }
}

/// One mail as a minimal SMTP server received it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mail {
    pub(crate) from: String,
    pub(crate) to: Vec<String>,
    pub(crate) data: String,
    /// Whether it came over TLS (STARTTLS or implicit).
    pub(crate) over_tls: bool,
}

/// How the minimal SMTP server secures its connections.
#[derive(Clone)]
pub(crate) enum SmtpMode {
    /// Plain SMTP, STARTTLS not offered.
    Plain,
    /// STARTTLS offered in the EHLO answer; upgrades when asked.
    StartTls(TlsAcceptor),
    /// TLS from the first byte.
    Implicit(TlsAcceptor),
}

/// A minimal SMTP server (EHLO, STARTTLS, MAIL, RCPT, DATA, QUIT) that keeps
/// what it gets.
pub(crate) async fn smtp_server(mode: SmtpMode) -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
    let sink = mails.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (sink, mode) = (sink.clone(), mode.clone());
            tokio::spawn(async move {
                match mode {
                    SmtpMode::Plain => {
                        smtp_session(tcp, &sink, false, false).await;
                    }
                    SmtpMode::StartTls(tls) => {
                        if let Some(tcp) = smtp_session(tcp, &sink, true, false).await {
                            if let Ok(stream) = tls.accept(tcp).await {
                                smtp_session(stream, &sink, false, true).await;
                            }
                        }
                    }
                    SmtpMode::Implicit(tls) => {
                        if let Ok(stream) = tls.accept(tcp).await {
                            smtp_session(stream, &sink, false, true).await;
                        }
                    }
                }
            });
        }
    });
    (port, mails)
}

/// One SMTP conversation on `stream`, from the greeting (after a STARTTLS
/// upgrade: from the EHLO that follows it). Answers the stream back when the
/// client asked for STARTTLS, so that the caller can wrap it in TLS.
pub(crate) async fn smtp_session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    sink: &Mutex<Vec<Mail>>,
    offer_starttls: bool,
    over_tls: bool,
) -> Option<S> {
    let mut stream = TokioBufReader::new(stream);
    let _ = stream
        .get_mut()
        .write_all(b"220 test.local ESMTP\r\n")
        .await;
    let mut mail = Mail {
        over_tls,
        ..Mail::default()
    };
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if offer_starttls {
                b"250-test.local\r\n250 STARTTLS\r\n"
            } else {
                b"250 test.local\r\n"
            }
        } else if upper == "STARTTLS" && offer_starttls {
            let _ = stream.get_mut().write_all(b"220 ready for TLS\r\n").await;
            // The client waits for the 220 before its handshake: nothing is buffered.
            return Some(stream.into_inner());
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = line[10..].trim().to_owned();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(line[8..].trim().to_owned());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            let _ = stream.get_mut().write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            loop {
                data.clear();
                match stream.read_line(&mut data).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                let l = data.trim_end_matches(['\r', '\n']);
                if l == "." {
                    break;
                }
                mail.data.push_str(l);
                mail.data.push('\n');
            }
            let done = std::mem::replace(
                &mut mail,
                Mail {
                    over_tls,
                    ..Mail::default()
                },
            );
            sink.lock().unwrap().push(done);
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            let _ = stream.get_mut().write_all(b"221 bye\r\n").await;
            return None;
        } else {
            b"250 OK\r\n"
        };
        let _ = stream.get_mut().write_all(reply).await;
    }
}
