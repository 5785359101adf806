//! Fan-out: S subscribers in one room, P publishers, M messages each,
//! against Holdfast and the baseline (`benches/baseline`), over loopback with
//! real WebSocket clients.
//!
//! `cargo bench --bench fanout`. Environment:
//! - FANOUT_SUBSCRIBERS (1000), FANOUT_PUBLISHERS (1), FANOUT_MESSAGES (1000,
//!   per publisher).
//! - FANOUT_WINDOW (32): at most this many unacknowledged publishes per
//!   publisher (max-rate mode), or FANOUT_RATE (msg/s, all publishers
//!   together): publish on a fixed schedule instead, with no window; each
//!   message then carries its scheduled send time, so a late generator shows
//!   as latency rather than hiding it.
//! - FANOUT_CONNECT_CONCURRENCY (200): handshakes in flight while connecting.
//! - FANOUT_DRAIN_TIMEOUT_MS (5000): after the last ack, how long deliveries
//!   may stall before the rest count as lost.
//! - FANOUT_PUBLISH_URL: publishers connect here instead of FANOUT_URL (a
//!   second node sharing Redis: cross-node fan-out).
//! - FANOUT_URL / BASELINE_URL, BASELINE_ONLY, HOLDFAST_ONLY, SERVER_CPUS,
//!   CLIENT_CPUS, LOADGEN_THREADS: see `benches/load/mod.rs` and the README.
//!
//! Figures: deliveries/s (from the first publish to the last delivery), lost,
//! duplicated and out-of-order deliveries (per subscriber, offsets must run
//! base+1, base+2, … with no gap or repeat), and latency from the publisher's
//! send to the subscriber's receipt: each publish carries `{"t": <ns>}` on the
//! bench's monotonic clock, and subscribers (same process, same clock)
//! subtract it from their receive time. Out of order = an offset first seen
//! after a higher one; a gap that never fills counts as lost.
//!
//! So that the load generator is not the bottleneck, subscribers use
//! `load::RawWs` (frames parsed in place, no allocation per frame) and scan
//! each frame for `"offset":` and `"t":`, never parsing it whole; the rows
//! "load generator CPU" and "load generator CPUs busy" show its headroom.
//! Writes `target/bench-results/fanout.json`.

mod baseline;
mod load;

use load::fanout::Config;

fn main() {
    baseline::serve_if_asked();
    let cfg = Config::from_env();
    let clients = (cfg.subscribers + cfg.publishers) as u64;
    let setup = load::Setup::new(clients);
    let mode = match cfg.rate {
        Some(r) => format!("fixed rate {r} msg/s"),
        None => format!("max rate, window {} per publisher", cfg.window),
    };
    let title = format!(
        "fanout: {} subscribers in one room, {} publisher(s) x {} messages, {mode}",
        cfg.subscribers, cfg.publishers, cfg.messages
    );
    let config = cfg.describe();
    let headlines = ["deliveries/s", "latency p50", "latency p99"];
    load::run_all(
        "fanout",
        &title,
        config,
        &setup,
        &headlines,
        |rt, setup, server| load::fanout::run(rt, setup, server, cfg, ""),
    );
}
