//! Idle connections: how fast C clients connect, what each costs the server
//! in memory, and (Holdfast only) how long a graceful drain of all of them
//! takes; against Holdfast and the baseline (`benches/baseline`), over
//! loopback with real WebSocket clients.
//!
//! `cargo bench --bench connections`. Environment:
//! - CONNECTIONS_COUNT (10000): clients, each connected until it got
//!   `welcome`, then held idle.
//! - CONNECTIONS_PER_SOURCE (20000): clients per loopback source address
//!   (127.0.0.1, .2, ...), under the ephemeral port range one address has
//!   towards the server (about 28,000), so that 50,000 can connect.
//! - CONNECTIONS_CONCURRENCY (200): handshakes in flight while connecting.
//! - CONNECTIONS_HOLD_MS (1000): idle time before the server's RSS is read.
//! - CONNECTIONS_DRAIN_TIMEOUT_MS (60000): bound on the drain.
//! - CONNECTIONS_DRAIN=1: also SIGTERM a server given by CONNECTIONS_URL
//!   and SERVER_PID (never done unasked to a server this bench did not start).
//! - CONNECTIONS_URL / BASELINE_URL (+ SERVER_PID / BASELINE_PID for the
//!   memory figures), BASELINE_ONLY, HOLDFAST_ONLY, SERVER_CPUS, CLIENT_CPUS,
//!   LOADGEN_THREADS: see `benches/load/mod.rs` and the README.
//!
//! RSS per connection = (server VmRSS with all C connected − VmRSS before
//! the first connect) / C, from `/proc/<pid>/status`. Drain = from SIGTERM to
//! the last client having received both `{"type":"draining",…}` and a close
//! frame with code 1001; the baseline has no graceful drain (n/a). Clients
//! are `load::RawWs` (a 4 KiB buffer each, answering pings, echoing the
//! close). The bench raises its RLIMIT_NOFILE towards 2·C+1000 (the servers
//! it spawns inherit it); the limit is per process, and each process needs
//! about C+1000, so up to the hard limit is enough.
//! Writes `target/bench-results/connections.json`.

mod baseline;
mod load;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;

use load::{is_type, metric, ms, now_ns, Better, Kind, Metric, PhaseCpu, RawWs, Server, Setup};

#[derive(Clone, Copy)]
struct Config {
    count: usize,
    concurrency: usize,
    hold: Duration,
    drain_timeout: Duration,
    drain_external: bool,
    per_source: usize,
}

/// What an idle client saw until its connection ended.
#[derive(Default)]
struct Held {
    /// When `draining` arrived (`now_ns`).
    draining_ns: Option<u64>,
    /// The close frame's code (1005 for a close frame without one).
    close_code: Option<u16>,
    /// When the close frame arrived (`now_ns`).
    closed_ns: Option<u64>,
}

async fn hold(mut ws: RawWs) -> Held {
    let mut h = Held::default();
    loop {
        match ws.next_text().await {
            Ok(Some(frame)) => {
                if is_type(frame, b"draining") {
                    h.draining_ns.get_or_insert_with(now_ns);
                }
            }
            Ok(None) => {
                h.close_code = ws.close_code;
                h.closed_ns = Some(now_ns());
                return h;
            }
            Err(_) => return h,
        }
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// The source address of client `i` towards a server on 127.0.0.1: the
/// system's (127.0.0.1) for the first `per_source`, then 127.0.0.2, and so
/// on (all of 127/8 is loopback on Linux); the system's for any other server.
fn source(url: &str, i: usize, per_source: usize) -> Option<std::net::IpAddr> {
    if !url.starts_with("ws://127.0.0.1:") {
        return None;
    }
    let n = u8::try_from(1 + i / per_source.max(1)).expect("at most 255 source addresses");
    (n > 1).then(|| std::net::Ipv4Addr::new(127, 0, 0, n).into())
}

fn run(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    server: &mut Server,
    cfg: Config,
) -> Result<Vec<Metric>, String> {
    let url = server.url.clone();
    let pid = server.pid;
    let rss_before = pid.and_then(load::rss_kib);
    let mut out = Vec::new();

    let (held, ok_count) = rt.block_on(async {
        let cpu = PhaseCpu::start(setup, pid);
        let t0 = Instant::now();
        let results = load::run_many(cfg.count, cfg.concurrency, |i| {
            let url = url.clone();
            let source = source(&url, i, cfg.per_source);
            async move {
                let t = now_ns();
                let connect = RawWs::connect_from(&url, 4096, source);
                let ws = tokio::time::timeout(load::CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| "connect timed out".to_owned())??;
                let took = now_ns() - t;
                Ok((took, tokio::spawn(hold(ws))))
            }
        })
        .await;
        let secs = t0.elapsed().as_secs_f64();
        let server_cpu_s = cpu.server_seconds();
        let cpu = cpu.metrics("connect: ");
        let mut latencies = Vec::with_capacity(cfg.count);
        let mut held: Vec<JoinHandle<Held>> = Vec::with_capacity(cfg.count);
        let mut first_error = None;
        for r in results {
            match r {
                Ok((took, h)) => {
                    latencies.push(took);
                    held.push(h);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let failed = cfg.count - held.len();
        if let Some(e) = &first_error {
            eprintln!("  {failed} connects failed; first: {e}");
        }
        eprintln!("  {} connected in {secs:.2} s", held.len());
        latencies.sort_unstable();
        out.push(metric(
            "connections held",
            "count",
            Better::Higher,
            held.len() as f64,
        ));
        out.push(metric(
            "failed connects",
            "count",
            Better::Lower,
            failed as f64,
        ));
        out.push(metric(
            "connect rate",
            "conn/s",
            Better::Higher,
            held.len() as f64 / secs,
        ));
        out.push(metric(
            "connect+welcome p50",
            "ms",
            Better::Lower,
            ms(load::pct(&latencies, 50.0)),
        ));
        out.push(metric(
            "connect+welcome p99",
            "ms",
            Better::Lower,
            ms(load::pct(&latencies, 99.0)),
        ));
        // Steadier than the rate when the machine is shared: what each
        // connection cost the server, whatever else ran beside it.
        out.push(metric(
            "connect: server CPU per connection",
            "µs",
            Better::Lower,
            server_cpu_s
                .filter(|_| !held.is_empty())
                .map(|s| 1e6 * s / held.len() as f64),
        ));
        out.extend(cpu);
        tokio::time::sleep(cfg.hold).await;
        let n = held.len();
        (held, n)
    });

    let rss_after = pid.and_then(load::rss_kib);
    let dropped = held.iter().filter(|h| h.is_finished()).count();
    out.push(metric(
        "server RSS before",
        "MiB",
        Better::Lower,
        mib(rss_before),
    ));
    out.push(metric(
        "server RSS, all connected",
        "MiB",
        Better::Lower,
        mib(rss_after),
    ));
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if ok_count > 0 => Some((a as f64 - b as f64) / ok_count as f64),
        _ => None,
    };
    out.push(metric(
        "server RSS per connection",
        "KiB",
        Better::Lower,
        per_conn,
    ));
    out.push(metric(
        "closed while idle",
        "count",
        Better::Lower,
        dropped as f64,
    ));

    // Graceful drain: Holdfast only; a server this bench did not start only
    // when asked to.
    let drain =
        server.kind == Kind::Holdfast && pid.is_some() && (server.spawned() || cfg.drain_external);
    let mut drain_metrics = vec![
        metric(
            "drain: clients told draining",
            "count",
            Better::Higher,
            None,
        ),
        metric(
            "drain: clients closed with 1001",
            "count",
            Better::Higher,
            None,
        ),
        metric(
            "drain: SIGTERM to last close (all)",
            "ms",
            Better::Lower,
            None,
        ),
        metric("drain: SIGTERM to close p50", "ms", Better::Lower, None),
        metric("drain: SIGTERM to process exit", "ms", Better::Lower, None),
    ];
    if drain {
        let t0 = now_ns();
        server.sigterm();
        let results = rt.block_on(async {
            let all = async {
                let mut v = Vec::with_capacity(held.len());
                for h in held {
                    v.push(h.await.unwrap_or_default());
                }
                v
            };
            tokio::time::timeout(cfg.drain_timeout, all).await
        });
        let exit = server.wait_exit(cfg.drain_timeout);
        let exit_ms = exit.map(|_| (now_ns() - t0) as f64 / 1e6);
        match results {
            Ok(results) => {
                let told = results.iter().filter(|h| h.draining_ns.is_some()).count();
                let closed_1001 = results
                    .iter()
                    .filter(|h| h.close_code == Some(1001))
                    .count();
                let mut done: Vec<u64> = results
                    .iter()
                    .filter(|h| h.draining_ns.is_some() && h.close_code == Some(1001))
                    .filter_map(|h| h.closed_ns.map(|c| c - t0))
                    .collect();
                done.sort_unstable();
                let all = (done.len() == results.len())
                    .then(|| done.last().copied())
                    .flatten();
                if done.len() != results.len() {
                    let other: Vec<_> = results
                        .iter()
                        .filter_map(|h| h.close_code)
                        .filter(|&c| c != 1001)
                        .take(5)
                        .collect();
                    eprintln!(
                        "  drain: {told} told draining, {closed_1001} closed with 1001, of {}; other close codes: {other:?}",
                        results.len()
                    );
                }
                drain_metrics = vec![
                    metric(
                        "drain: clients told draining",
                        "count",
                        Better::Higher,
                        told as f64,
                    ),
                    metric(
                        "drain: clients closed with 1001",
                        "count",
                        Better::Higher,
                        closed_1001 as f64,
                    ),
                    metric(
                        "drain: SIGTERM to last close (all)",
                        "ms",
                        Better::Lower,
                        ms(all),
                    ),
                    metric(
                        "drain: SIGTERM to close p50",
                        "ms",
                        Better::Lower,
                        ms(load::pct(&done, 50.0)),
                    ),
                    metric(
                        "drain: SIGTERM to process exit",
                        "ms",
                        Better::Lower,
                        exit_ms,
                    ),
                ];
                if let Some(code) = exit.and_then(|s| s.code()) {
                    if code != 0 {
                        eprintln!("  holdfast exited with code {code} after SIGTERM");
                    }
                }
            }
            Err(_) => {
                eprintln!(
                    "  drain: not every client closed within {:?}",
                    cfg.drain_timeout
                );
                drain_metrics[4] = metric(
                    "drain: SIGTERM to process exit",
                    "ms",
                    Better::Lower,
                    exit_ms,
                );
            }
        }
    }
    out.extend(drain_metrics);
    Ok(out)
}

fn main() {
    baseline::serve_if_asked();
    let cfg = Config {
        count: load::env_or("CONNECTIONS_COUNT", 10_000),
        concurrency: load::env_or("CONNECTIONS_CONCURRENCY", 200),
        hold: Duration::from_millis(load::env_or("CONNECTIONS_HOLD_MS", 1000)),
        drain_timeout: Duration::from_millis(load::env_or("CONNECTIONS_DRAIN_TIMEOUT_MS", 60_000)),
        drain_external: load::env_flag("CONNECTIONS_DRAIN"),
        per_source: load::env_or("CONNECTIONS_PER_SOURCE", 20_000),
    };
    let setup = load::Setup::new(cfg.count as u64);
    let title = format!(
        "connections: {} idle clients ({} handshakes in flight), RSS per connection, graceful drain",
        cfg.count, cfg.concurrency
    );
    let config = json!({
        "connections": cfg.count, "concurrency": cfg.concurrency, "hold_ms": cfg.hold.as_millis() as u64,
        "drain_timeout_ms": cfg.drain_timeout.as_millis() as u64,
    });
    load::run_all(
        "connections",
        &title,
        config,
        &setup,
        &[
            "connect rate",
            "connect: server CPU per connection",
            "server RSS per connection",
        ],
        |rt, setup, server| run(rt, setup, server, cfg),
    );
}
