//! The network fuzzer of `server/tests/netfuzz.rs`, for longer: mutated,
//! random and malformed WebSocket frames against the release binary over
//! several connections at once, with the server's resident set printed
//! after every round, so that growth shows as a trend, not one number.
//! Exits 1 on any failure (a case answered wrongly, a request never
//! answered, the server not ready, or its exit).
//!
//! `cargo bench --bench netfuzz`; `NETFUZZ_CASES` (200000),
//! `NETFUZZ_ROUNDS` (10), `NETFUZZ_CONNECTIONS` (8), `NETFUZZ_SEED` (1);
//! `SERVER_CPUS` / `CLIENT_CPUS` pin as in the other benches.

#[allow(dead_code)] // load spawns it; this bench never does
mod baseline;
mod load;

#[path = "../server/tests/common/netfuzz.rs"]
mod netfuzz;

use std::time::Instant;

use load::{client_frame, env_or, Setup};

fn main() {
    let cases: u64 = env_or("NETFUZZ_CASES", 200_000);
    let rounds: u64 = env_or("NETFUZZ_ROUNDS", 10);
    let connections: usize = env_or("NETFUZZ_CONNECTIONS", 8);
    let seed: u64 = env_or("NETFUZZ_SEED", 1);
    let setup = Setup::new(1000);
    let server = load::spawn_holdfast_from(
        &setup,
        &load::holdfast_binary(),
        // Sessions resumable for 1 s (300 s by default), so that what stays
        // resident is what leaks, not the TTL's sessions.
        &[("HOLDFAST__SESSION__TTL_MS", "1000")],
    )
    .expect("holdfast starts");
    let pid = server.pid.expect("spawned");
    let addr = server
        .url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let alive = || load::http_ready(port);
    let started = Instant::now();
    let mut failed = false;
    println!("rss before: {} KiB", netfuzz::rss_kib(pid));
    for round in 0..rounds {
        let report = netfuzz::run(
            &addr,
            connections,
            cases / rounds,
            seed.wrapping_add(round),
            65536,
            &alive,
        );
        report.print(&format!("round {round}"), started.elapsed());
        println!("rss after round {round}: {} KiB", netfuzz::rss_kib(pid));
        failed |= !report.failures.is_empty();
    }
    if !alive() {
        eprintln!("FAILED: the server is not ready after the run");
        failed = true;
    }
    server.stop();
    if failed {
        std::process::exit(1);
    }
}
