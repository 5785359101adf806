//! Real PostgreSQL for the persistence tests, and a TCP proxy that can take
//! the database away and give it back.
//!
//! Without PostgreSQL on 127.0.0.1:5432 the tests that need it print that
//! they were skipped and why; under `CI=true` a missing service fails them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tokio::net::{TcpListener, TcpStream};

/// Where PostgreSQL listens (trust auth, database `test`).
pub const PG_ADDR: &str = "127.0.0.1:5432";

/// Whether PostgreSQL answers; `None` after printing why a test is skipped.
/// Panics under `CI=true`, where a missing service is a failure.
pub async fn postgres(test: &str) -> Option<()> {
    let up = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(PG_ADDR))
        .await
        .is_ok_and(|r| r.is_ok());
    if up {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: PostgreSQL is not reachable at {PG_ADDR}, and CI=true requires it");
    }
    eprintln!("SKIPPED {test}: PostgreSQL is not reachable at {PG_ADDR} (start it, or run under CI=true to make this a failure)");
    None
}

/// A fresh, empty database; its URL. Dropped by [`drop_database`].
pub async fn fresh_database() -> (String, String) {
    let name = format!("holdfast_t_{:016x}", rand_u64());
    let mut admin = AsyncPgConnection::establish(&format!("postgres://postgres@{PG_ADDR}/test"))
        .await
        .expect("connect to test");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    (
        name.clone(),
        format!("postgres://postgres@{PG_ADDR}/{name}"),
    )
}

/// Drops a database made by [`fresh_database`] (best effort).
pub async fn drop_database(name: &str) {
    if let Ok(mut admin) =
        AsyncPgConnection::establish(&format!("postgres://postgres@{PG_ADDR}/test")).await
    {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// A fresh database on the local PostgreSQL for `test`: its name and URL.
/// `None` where PostgreSQL is not reachable (the test is skipped, and says
/// so; under `CI=true` it fails instead, see [`postgres`]).
pub async fn fresh_postgres(test: &str) -> Option<(String, String)> {
    postgres(test).await?;
    Some(fresh_database().await)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A TCP proxy to PostgreSQL on a port of its own; `stop` cuts every
/// connection and refuses new ones, `start` serves again on the same port.
pub struct Proxy {
    pub port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free port, not yet serving (connections are refused).
    pub fn reserve() -> Proxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Proxy {
            port,
            tasks: Vec::new(),
        }
    }

    /// Starts forwarding to PostgreSQL.
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind proxy port");
        let conns =
            std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let registry = conns.clone();
        let accept = tokio::task::spawn_local(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::task::spawn_local(async move {
                    if let Ok(mut server) = TcpStream::connect(PG_ADDR).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().unwrap().push(conn.abort_handle());
            }
        });
        let killer = tokio::task::spawn_local(async move {
            // Owned by `tasks`: aborting it aborts every forwarded connection.
            struct AbortAll(std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>);
            impl Drop for AbortAll {
                fn drop(&mut self) {
                    for h in self.0.lock().unwrap().drain(..) {
                        h.abort();
                    }
                }
            }
            let _guard = AbortAll(conns);
            std::future::pending::<()>().await;
        });
        self.tasks = vec![accept, killer];
    }

    /// Cuts every connection and stops listening.
    pub async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// The database URL through the proxy.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

/// Where the shared Redis listens.
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

/// Whether the shared Redis answers; `None` after printing why a test is
/// skipped. Panics under `CI=true`.
pub async fn redis(test: &str) -> Option<()> {
    let up = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(REDIS_ADDR))
        .await
        .is_ok_and(|r| r.is_ok());
    if up {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: Redis is not reachable at {REDIS_ADDR}, and CI=true requires it");
    }
    eprintln!("SKIPPED {test}: Redis is not reachable at {REDIS_ADDR} (start it, or run under CI=true to make this a failure)");
    None
}

/// A unique key prefix, so that tests never see each other's rooms.
pub fn redis_prefix() -> String {
    format!("hft{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

/// A `redis-server` of the test's own on a free port (so the shared one is never stopped).
pub struct OwnRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one, or answers `None` (skipped; a failure under `CI=true`) when
    /// `redis-server` is not installed.
    pub async fn start(test: &str) -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis { port, child: None };
        if r.up().await.is_err() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: cannot start redis-server, and CI=true requires it");
            }
            eprintln!("SKIPPED {test}: redis-server is not installed");
            return None;
        }
        Some(r)
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub async fn up(&mut self) -> Result<(), String> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let port = self.port;
        let accepting = super::eventually(Duration::from_secs(10), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        accepting
            .then_some(())
            .ok_or_else(|| "redis-server did not start".into())
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Keeps the server busy (a script that spins) for `ms` milliseconds:
    /// every other command waits, then runs. The script is sent when this
    /// answers; the handle ends when it is done.
    pub async fn busy(&self, ms: u64) -> tokio::task::JoinHandle<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let script = format!(
            "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] \
             while true do t = redis.call('TIME') \
             if t[1] * 1e6 + t[2] - s > {} then return 1 end end",
            ms * 1000
        );
        let request = resp(&["EVAL", &script, "0"]);
        let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", self.port)).await.unwrap());
        conn.get_mut().write_all(request.as_bytes()).await.unwrap();
        tokio::spawn(async move {
            let mut reply = String::new();
            conn.read_line(&mut reply).await.unwrap();
            reply.trim_end().to_owned()
        })
    }

    /// Runs one command on a connection of its own and answers its reply:
    /// a status, error or integer line as sent (`+OK`), a bulk string's
    /// text.
    pub async fn command(&self, args: &[&str]) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", self.port)).await.unwrap());
        conn.get_mut()
            .write_all(resp(args).as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(len) => {
                let mut bulk = vec![0; len + 2];
                conn.read_exact(&mut bulk).await.unwrap();
                String::from_utf8_lossy(&bulk[..len]).into_owned()
            }
            None => line.to_owned(),
        }
    }
}

/// A command in RESP, as a client sends it: an array of bulk strings.
fn resp(args: &[&str]) -> String {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    request
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.down();
    }
}
