//! The fan-out scenario (`benches/fanout.rs`, and `benches/handlers.rs`,
//! which runs it through a room handler): S subscribers in one room, P
//! publishers, M messages each, with real WebSocket clients. See
//! `benches/fanout.rs` for the figures and the environment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use super::{
    field_u64, is_type, last_field_u64, metric, ms, now_ns, Better, Metric, PhaseCpu, RawWs,
    Server, Setup, Ws,
};
use crate::load;

/// Read buffer of a subscriber: frames arrive in bursts.
const SUB_READ_BUFFER: usize = 16 * 1024;

/// One fan-out scenario.
#[derive(Clone, Copy)]
pub struct Config {
    pub subscribers: usize,
    pub publishers: usize,
    pub messages: u64,
    pub window: usize,
    /// msg/s over all publishers; `None`: max rate with `window`.
    pub rate: Option<f64>,
    pub connect_concurrency: usize,
    pub drain_timeout: Duration,
}

/// What one subscriber saw.
#[derive(Default)]
struct SubStats {
    /// First receipts (each offset counted once).
    distinct: u64,
    /// Offsets received again.
    duplicated: u64,
    /// First receipts of an offset below one already received.
    out_of_order: u64,
    /// Offsets outside base+1..=base+P*M (another publisher in the room?).
    unexpected: u64,
    /// Receive time minus send time, ns, one per first receipt.
    latencies: Vec<u64>,
    /// Receive time of the last first receipt (`now_ns`).
    last_ns: u64,
}

async fn subscriber(
    mut ws: RawWs,
    base: u64,
    expected: u64,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> SubStats {
    let mut s = SubStats {
        latencies: Vec::with_capacity(expected.min(1 << 16) as usize),
        ..SubStats::default()
    };
    let mut seen = vec![0u64; expected.div_ceil(64) as usize];
    let mut highest = base;
    loop {
        let frame = tokio::select! {
            biased;
            f = ws.next_text() => f,
            _ = stop.changed() => break,
        };
        let Ok(Some(b)) = frame else { break };
        let now = now_ns();
        if !is_type(b, b"message") {
            continue;
        }
        let Some(offset) = field_u64(b, b"\"offset\":") else {
            s.unexpected += 1;
            continue;
        };
        if offset <= base || offset - base > expected {
            s.unexpected += 1;
            continue;
        }
        let i = (offset - base - 1) as usize;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if seen[word] & bit != 0 {
            s.duplicated += 1;
            continue;
        }
        seen[word] |= bit;
        s.distinct += 1;
        delivered.fetch_add(1, Ordering::Relaxed);
        if offset < highest {
            s.out_of_order += 1;
        }
        highest = highest.max(offset);
        if let Some(t) = last_field_u64(b, b"\"t\":") {
            s.latencies.push(now.saturating_sub(t));
        }
        s.last_ns = now;
    }
    s
}

/// What one publisher did.
struct PubStats {
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    /// When its last ack (or error) arrived (`now_ns`).
    done_ns: u64,
    /// Ack receipt minus send time, ns, one per ack.
    ack_latencies: Vec<u64>,
}

async fn publisher(
    ws: Ws,
    p: usize,
    room: Arc<str>,
    cfg: Config,
    start_ns: u64,
    mut stop: watch::Receiver<bool>,
) -> Result<PubStats, String> {
    let (mut sink, mut source) = ws.split();
    let m = cfg.messages;
    // Max rate: `window` in flight; fixed rate: no window.
    let permits = match cfg.rate {
        Some(_) => m as usize,
        None => cfg.window.max(1),
    };
    let window = Arc::new(Semaphore::new(permits));
    // When each publish (by id) was written, for its ack's latency.
    let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..m).map(|_| AtomicU64::new(0)).collect());
    let ack_latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(m as usize)));
    let acks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    // The server's close frame, if it closed this publisher.
    let closed = Arc::new(std::sync::Mutex::new(None::<String>));
    // A failed write or a closed window, with what the server said.
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "publisher {p}: {e}; server's first error: {}; server's close: {} \
             (against a server with default limits, see the README on HOLDFAST__WS__*)",
            first_error.lock().unwrap().as_deref().unwrap_or("none"),
            closed.lock().unwrap().as_deref().unwrap_or("none"),
        )
    };
    // Reads acks (and the room's messages, which it ignores) until the run
    // stops, so that the publisher stays a well-behaved member throughout;
    // the writer below waits for the window to refill.
    let reader = {
        let (window, acks, errors, first_error, closed, sent_ns) = (
            window.clone(),
            acks.clone(),
            errors.clone(),
            first_error.clone(),
            closed.clone(),
            sent_ns.clone(),
        );
        let ack_latencies = ack_latencies.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    biased;
                    f = source.next() => f,
                    _ = stop.changed() => break,
                };
                let t = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => {
                        let said =
                            c.map_or("no code".to_owned(), |c| format!("{} {}", c.code, c.reason));
                        *closed.lock().unwrap() = Some(said);
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => {
                        // The writer must not wait on acks that cannot come.
                        window.close();
                        break;
                    }
                };
                let b = t.as_bytes();
                if is_type(b, b"ack") {
                    let at = now_ns();
                    let sent = last_field_u64(b, b"\"id\":")
                        .and_then(|id| sent_ns.get(id as usize))
                        .map_or(0, |t| t.load(Ordering::Relaxed));
                    if sent > 0 {
                        ack_latencies.lock().unwrap().push(at.saturating_sub(sent));
                    }
                    acks.fetch_add(1, Ordering::Relaxed);
                    window.add_permits(1);
                } else if is_type(b, b"error") {
                    errors.fetch_add(1, Ordering::Relaxed);
                    // Poisoning needs a panic while locked; nothing here panics.
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| t.as_str().to_owned());
                    window.add_permits(1);
                }
            }
        })
    };
    let interval_ns = cfg.rate.map(|r| (cfg.publishers as f64 * 1e9 / r) as u64);
    // Publishers start staggered over one interval.
    let phase = interval_ns.map_or(0, |iv| iv * p as u64 / cfg.publishers as u64);
    for i in 0..m {
        let t = match interval_ns {
            Some(iv) => {
                let due = start_ns + phase + i * iv;
                let now = now_ns();
                if due > now {
                    sink.flush().await.map_err(|e| fail(&e))?;
                    tokio::time::sleep(Duration::from_nanos(due - now)).await;
                }
                due
            }
            None => 0,
        };
        let permit = match window.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                sink.flush().await.map_err(|e| fail(&e))?;
                window.acquire().await.map_err(|e| fail(&e))?
            }
        };
        permit.forget();
        let t = if t == 0 { now_ns() } else { t };
        let frame =
            format!(r#"{{"type":"publish","room":"{room}","id":{i},"data":{{"t":{t},"p":{p}}}}}"#);
        // Scheduled time at a fixed rate (as for deliveries), else now.
        sent_ns[i as usize].store(t, Ordering::Relaxed);
        sink.feed(Message::text(frame))
            .await
            .map_err(|e| fail(&e))?;
        if interval_ns.is_some() {
            sink.flush().await.map_err(|e| fail(&e))?;
        }
    }
    sink.flush().await.map_err(|e| fail(&e))?;
    // Every permit back: every publish answered.
    let all =
        tokio::time::timeout(Duration::from_secs(60), window.acquire_many(permits as u32)).await;
    let done_ns = now_ns();
    let acked = acks.load(Ordering::Relaxed);
    let errs = errors.load(Ordering::Relaxed);
    if !matches!(all, Ok(Ok(_))) {
        eprintln!(
            "{}",
            fail(&format!("{} of {m} publishes unanswered", m - acked - errs))
        );
    }
    // Keep the connection (and its membership) until the run stops: the
    // reader goes on draining the room's messages.
    tokio::spawn(async move {
        let _ = reader.await;
        drop(sink);
    });
    let first_error = first_error.lock().unwrap().take();
    let ack_latencies = std::mem::take(&mut *ack_latencies.lock().unwrap());
    Ok(PubStats {
        acked,
        errors: errs,
        first_error,
        done_ns,
        ack_latencies,
    })
}

impl Config {
    /// From `FANOUT_*` (see `benches/fanout.rs`).
    pub fn from_env() -> Self {
        Self {
            subscribers: load::env_or("FANOUT_SUBSCRIBERS", 1000),
            publishers: load::env_or("FANOUT_PUBLISHERS", 1usize).max(1),
            messages: load::env_or("FANOUT_MESSAGES", 1000),
            window: load::env_or("FANOUT_WINDOW", 32),
            rate: load::env_opt("FANOUT_RATE").map(|r| r.parse().expect("FANOUT_RATE: msg/s")),
            connect_concurrency: load::env_or("FANOUT_CONNECT_CONCURRENCY", 200),
            drain_timeout: Duration::from_millis(load::env_or("FANOUT_DRAIN_TIMEOUT_MS", 5000)),
        }
    }

    /// The figures' settings, for the JSON.
    pub fn describe(&self) -> serde_json::Value {
        json!({
            "subscribers": self.subscribers, "publishers": self.publishers, "messages_per_publisher": self.messages,
            "window": self.rate.is_none().then_some(self.window), "rate_msg_per_s": self.rate,
            "connect_concurrency": self.connect_concurrency, "drain_timeout_ms": self.drain_timeout.as_millis() as u64,
        })
    }
}

/// Runs the scenario once against `server`, in a new room whose name starts
/// with `room_prefix` (a namespace's prefix selects its options and handler).
pub fn run(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    server: &mut Server,
    cfg: Config,
    room_prefix: &str,
) -> Result<Vec<Metric>, String> {
    let url: Arc<str> = server.url.as_str().into();
    // Publishers may connect to another node (rooms spanning nodes through Redis).
    let pub_url: Arc<str> =
        std::env::var("FANOUT_PUBLISH_URL").map_or_else(|_| url.clone(), Into::into);
    let pid = server.pid;
    rt.block_on(async move {
        let room: Arc<str> =
            format!("{room_prefix}fanout-{}-{}", std::process::id(), now_ns()).into();
        let t_connect = Instant::now();
        // Subscribers: the raw client (the hot path); publishers: tungstenite.
        let subs = load::all_ok(
            load::run_many(cfg.subscribers, cfg.connect_concurrency, |_| {
                let (url, room) = (url.clone(), room.clone());
                async move {
                    let mut ws = tokio::time::timeout(
                        load::CONNECT_TIMEOUT,
                        RawWs::connect(&url, SUB_READ_BUFFER),
                    )
                    .await
                    .map_err(|_| "connect timed out".to_owned())??;
                    let base = ws.join(&room).await?;
                    Ok((ws, base))
                }
            })
            .await,
        )
        .map_err(|e| format!("subscribers: {e}"))?;
        let pubs = load::all_ok(
            load::run_many(cfg.publishers, cfg.connect_concurrency, |_| {
                let (url, room) = (pub_url.clone(), room.clone());
                async move {
                    let mut ws = tokio::time::timeout(
                        load::CONNECT_TIMEOUT,
                        load::connect(&url, SUB_READ_BUFFER),
                    )
                    .await
                    .map_err(|_| "connect timed out".to_owned())??;
                    let base = load::join(&mut ws, &room).await?;
                    Ok((ws, base))
                }
            })
            .await,
        )
        .map_err(|e| format!("publishers: {e}"))?;
        let connect_s = t_connect.elapsed().as_secs_f64();
        eprintln!(
            "  {} subscribers and {} publishers connected and joined in {connect_s:.2} s",
            cfg.subscribers, cfg.publishers
        );

        let expected = cfg.publishers as u64 * cfg.messages;
        let delivered = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let sub_tasks: Vec<_> = subs
            .into_iter()
            .map(|(ws, base)| {
                tokio::spawn(subscriber(
                    ws,
                    base,
                    expected,
                    delivered.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();

        let cpu = PhaseCpu::start(setup, pid);
        let start_ns = now_ns();
        let pub_tasks: Vec<_> = pubs
            .into_iter()
            .enumerate()
            .map(|(p, (ws, _))| {
                tokio::spawn(publisher(
                    ws,
                    p,
                    room.clone(),
                    cfg,
                    start_ns,
                    stop_rx.clone(),
                ))
            })
            .collect();
        let mut pub_stats = Vec::new();
        for t in pub_tasks {
            pub_stats.push(t.await.map_err(|e| e.to_string())??);
        }
        let acked: u64 = pub_stats.iter().map(|p| p.acked).sum();
        let publish_errors: u64 = pub_stats.iter().map(|p| p.errors).sum();
        let publish_done_ns = pub_stats
            .iter()
            .map(|p| p.done_ns)
            .max()
            .unwrap_or(start_ns);
        if let Some(e) = pub_stats.iter().find_map(|p| p.first_error.clone()) {
            eprintln!("  first publish error: {e}");
        }

        // Wait for every acked message to reach every subscriber, or for
        // deliveries to stall.
        let want = acked * cfg.subscribers as u64;
        let (mut last, mut since) = (delivered.load(Ordering::Relaxed), Instant::now());
        loop {
            let d = delivered.load(Ordering::Relaxed);
            if d >= want {
                break;
            }
            if d != last {
                (last, since) = (d, Instant::now());
            } else if since.elapsed() > cfg.drain_timeout {
                eprintln!("  deliveries stalled at {d} of {want}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let cpu = cpu.metrics("");
        let _ = stop_tx.send(true);

        let mut total = SubStats::default();
        let mut latencies = Vec::with_capacity(want as usize);
        let mut lost = 0;
        for t in sub_tasks {
            let s = t.await.map_err(|e| e.to_string())?;
            lost += acked.saturating_sub(s.distinct);
            total.distinct += s.distinct;
            total.duplicated += s.duplicated;
            total.out_of_order += s.out_of_order;
            total.unexpected += s.unexpected;
            total.last_ns = total.last_ns.max(s.last_ns);
            latencies.extend_from_slice(&s.latencies);
        }
        latencies.sort_unstable();
        let secs = (total.last_ns.max(publish_done_ns) - start_ns) as f64 / 1e9;
        let publish_secs = (publish_done_ns - start_ns) as f64 / 1e9;
        let pct = |p| ms(load::pct(&latencies, p));
        let mut ack_latencies: Vec<u64> = pub_stats
            .iter()
            .flat_map(|p| p.ack_latencies.iter().copied())
            .collect();
        ack_latencies.sort_unstable();
        let ack_pct = |p| ms(load::pct(&ack_latencies, p));
        let mut out = vec![
            metric(
                "deliveries/s",
                "msg/s",
                Better::Higher,
                total.distinct as f64 / secs,
            ),
            metric(
                "publishes acked/s",
                "msg/s",
                Better::Higher,
                acked as f64 / publish_secs,
            ),
            metric(
                "duration (first publish..last delivery)",
                "s",
                Better::Lower,
                secs,
            ),
            metric("deliveries expected", "count", Better::Neither, want as f64),
            metric(
                "deliveries received",
                "count",
                Better::Neither,
                total.distinct as f64,
            ),
            metric("lost", "count", Better::Lower, lost as f64),
            metric(
                "duplicated",
                "count",
                Better::Lower,
                total.duplicated as f64,
            ),
            metric(
                "out of order",
                "count",
                Better::Lower,
                total.out_of_order as f64,
            ),
            metric(
                "unexpected offsets",
                "count",
                Better::Lower,
                total.unexpected as f64,
            ),
            metric(
                "publish errors",
                "count",
                Better::Lower,
                publish_errors as f64,
            ),
            metric("latency p50", "ms", Better::Lower, pct(50.0)),
            metric("latency p99", "ms", Better::Lower, pct(99.0)),
            metric("latency p99.9", "ms", Better::Lower, pct(99.9)),
            metric("latency max", "ms", Better::Lower, pct(100.0)),
            metric("publish-to-ack p50", "ms", Better::Lower, ack_pct(50.0)),
            metric("publish-to-ack p99", "ms", Better::Lower, ack_pct(99.0)),
            metric("connect+join all clients", "s", Better::Lower, connect_s),
        ];
        out.extend(cpu);
        Ok(out)
    })
}
