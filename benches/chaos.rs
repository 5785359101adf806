//! Chaos under load, for longer than `tests/chaos.rs` allows: every actor
//! of every node crashed in turn (the admin API's chaos route) while
//! members and acknowledged publishers work across several rooms; prints
//! what real clients received against what was acknowledged, and exits 1
//! if anything acknowledged was lost, duplicated or reordered, an offset
//! skipped within an epoch, or a client disconnected.
//!
//! `cargo bench --bench chaos`; `CHAOS_SECONDS` (default 120),
//! `CHAOS_ROOMS` (8), `CHAOS_SUBSCRIBERS` (4 per room and node),
//! `CHAOS_PUBLISHERS` (1 per room and node), `CHAOS_NODES=2` for two nodes
//! on a `redis-server` of the bench's own, killed for 3 s and restarted
//! empty at half time.

#[path = "../tests/common/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use holdfast::server::Builder;
use serde_json::json;

use harness::chaos::{self, Node, Plan};
use harness::services::{redis_prefix, OwnRedis};

const TOKEN: &str = "chaos-admin-token-0123456789";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Thousands of intended panics need no backtrace; any other panic does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = holdfast::actors::supervision::panic_message(info.payload());
        if !msg.contains("crashed on purpose") {
            default_hook(info);
        }
    }));
    let seconds = env("CHAOS_SECONDS", 120);
    let nodes = env("CHAOS_NODES", 1) as usize;
    let plan = Plan {
        rooms: env("CHAOS_ROOMS", 8) as usize,
        subscribers: env("CHAOS_SUBSCRIBERS", 4) as usize,
        publishers: env("CHAOS_PUBLISHERS", 1) as usize,
        publish_every: Duration::from_millis(25),
        duration: Duration::from_secs(seconds),
        crash_pause: Duration::from_millis(50),
        actors: Vec::new(),
    };
    let failures = actix_rt::System::new().block_on(async move {
        let mut redis = if nodes > 1 {
            Some(
                OwnRedis::start("bench chaos")
                    .await
                    .expect("redis-server for two nodes"),
            )
        } else {
            None
        };
        let prefix = redis_prefix();
        let mut servers = Vec::new();
        for _ in 0..nodes {
            let mut s = harness::settings();
            s.admin.token = holdfast::server::config::Secret::new(TOKEN);
            s.admin.chaos = true;
            s.supervision.backoff_max_ms = 1000;
            s.supervision.max_restarts = 1000;
            s.supervision.max_consecutive_failures = 1000;
            if let Some(r) = &redis {
                s.redis.url = serde_json::from_value(json!(r.url())).unwrap();
                s.redis.prefix = prefix.clone();
            }
            servers.push(Builder::new(s).start().await.expect("server starts"));
        }
        let targets: Vec<Node> = servers
            .iter()
            .map(|s| Node {
                addr: s.addr(),
                admin_token: TOKEN.into(),
            })
            .collect();
        let servers = &servers;
        let f = chaos::run(&targets, &plan, || async {
            let redis = redis.as_mut()?;
            tokio::time::sleep(Duration::from_secs(seconds / 2)).await;
            let from = Instant::now();
            redis.down();
            tokio::time::sleep(Duration::from_secs(3)).await;
            redis.up().await.unwrap();
            harness::wait_until(
                "every node back on Redis",
                Duration::from_secs(30),
                || async {
                    let mut all = true;
                    for s in servers {
                        all &= harness::get(s, "/health/redis").await.0 == 200;
                    }
                    all
                },
            )
            .await;
            Some((from, Instant::now()))
        })
        .await;
        f.print(&format!("chaos, {nodes} node(s), {seconds} s"));
        f.failures()
    });
    if !failures.is_empty() {
        eprintln!("FAILED: {failures:?}");
        std::process::exit(1);
    }
}
