//! Application-level round trip: `{"type":"ping","id":N}` →
//! `{"type":"pong","id":N}`, against Holdfast and the baseline
//! (`benches/baseline`), over loopback with real WebSocket clients.
//!
//! `cargo bench --bench rtt`. Environment:
//! - RTT_PINGS (10000): sequential pings on one connection, each sent once
//!   the previous pong arrived.
//! - RTT_CONNECTIONS (16): then as many connections at once, each doing
//!   RTT_PINGS sequential pings (0 to skip this part).
//! - RTT_WARMUP (500): unmeasured pings first, on each connection.
//! - RTT_URL / BASELINE_URL, BASELINE_ONLY, HOLDFAST_ONLY, SERVER_CPUS,
//!   CLIENT_CPUS, LOADGEN_THREADS: see `benches/load/mod.rs` and the README.
//!
//! Writes `target/bench-results/rtt.json`.

mod baseline;
mod load;

use std::time::Instant;

use serde_json::json;

use load::rtt::{percentiles, round_trips, Request};
use load::{metric, Better, Metric, PhaseCpu, RawWs, Server, Setup};

#[derive(Clone, Copy)]
struct Config {
    pings: u64,
    connections: usize,
    warmup: u64,
}

fn run(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    server: &mut Server,
    cfg: Config,
) -> Result<Vec<Metric>, String> {
    let url = server.url.clone();
    let pid = server.pid;
    rt.block_on(async move {
        let mut out = Vec::new();

        // One connection, one ping at a time.
        let mut ws = RawWs::connect(&url, 4096).await?;
        round_trips(&mut ws, Request::Ping, 0, cfg.warmup, false).await?;
        let cpu = PhaseCpu::start(setup, pid);
        let t0 = Instant::now();
        let mut samples = round_trips(&mut ws, Request::Ping, cfg.warmup, cfg.pings, true).await?;
        let secs = t0.elapsed().as_secs_f64();
        drop(ws);
        out.extend(percentiles(
            &[
                "1 conn: rtt p50",
                "1 conn: rtt p99",
                "1 conn: rtt p99.9",
                "1 conn: rtt max",
            ],
            &mut samples,
        ));
        out.push(metric(
            "1 conn: pings/s",
            "ping/s",
            Better::Higher,
            cfg.pings as f64 / secs,
        ));
        out.extend(cpu.metrics("1 conn: "));

        // Several connections at once.
        if cfg.connections > 0 {
            let per_conn = cfg.pings;
            let conns = load::all_ok(
                load::run_many(cfg.connections, cfg.connections, |_| {
                    let url = url.clone();
                    async move {
                        let mut ws = RawWs::connect(&url, 4096).await?;
                        round_trips(&mut ws, Request::Ping, 0, cfg.warmup, false).await?;
                        Ok(ws)
                    }
                })
                .await,
            )?;
            let cpu = PhaseCpu::start(setup, pid);
            let t0 = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut ws| {
                    tokio::spawn(async move {
                        round_trips(&mut ws, Request::Ping, cfg.warmup, per_conn, true).await
                    })
                })
                .collect();
            let mut samples = Vec::with_capacity(per_conn as usize * cfg.connections);
            for t in tasks {
                samples.extend(t.await.map_err(|e| e.to_string())??);
            }
            let secs = t0.elapsed().as_secs_f64();
            out.extend(percentiles(
                &[
                    "N conns: rtt p50",
                    "N conns: rtt p99",
                    "N conns: rtt p99.9",
                    "N conns: rtt max",
                ],
                &mut samples,
            ));
            out.push(metric(
                "N conns: pings/s",
                "ping/s",
                Better::Higher,
                samples.len() as f64 / secs,
            ));
            out.extend(cpu.metrics("N conns: "));
        }
        Ok(out)
    })
}

fn main() {
    baseline::serve_if_asked();
    let cfg = Config {
        pings: load::env_or("RTT_PINGS", 10_000u64).max(1),
        connections: load::env_or("RTT_CONNECTIONS", 16),
        warmup: load::env_or("RTT_WARMUP", 500),
    };
    let setup = load::Setup::new(cfg.connections as u64);
    let title = format!(
        "rtt: app-level ping -> pong; {} sequential pings on 1 connection, then on each of {} connections at once (N conns)",
        cfg.pings, cfg.connections
    );
    let config = json!({"pings": cfg.pings, "connections": cfg.connections, "warmup": cfg.warmup});
    let headlines = ["1 conn: rtt p50", "1 conn: rtt p99", "N conns: rtt p50"];
    load::run_all(
        "rtt",
        &title,
        config,
        &setup,
        &headlines,
        |rt, setup, server| run(rt, setup, server, cfg),
    );
}
