//! The application layer's cost: fan-out through a pass-through room
//! handler against fan-out with none, and an RPC round trip against the
//! `ping` round trip, on the same server in the same run.
//!
//! `cargo bench --bench handlers`. The server is this bench binary started
//! again as an application built on Holdfast (`cli::run`, the way a user's
//! own binary is), with:
//! - a room handler for the namespace `pass:` that accepts every join and
//!   every publish as sent (`Accept::AsSent`): each publish in `pass:` rooms
//!   goes to the handler actor and back before it is broadcast;
//! - an RPC handler for `bench.` that answers each call's `data`.
//!
//! Each round starts a fresh server and runs the fan-out scenario of
//! `benches/fanout.rs` twice on it, in a room without a handler and in a
//! `pass:` room (the order alternates between rounds), then
//! HANDLERS_ROUND_TRIPS (10000) sequential `ping`s and as many
//! `rpc bench.echo` calls on one connection (after HANDLERS_WARMUP, 500, of
//! each). Environment: the `FANOUT_*` settings (1000 subscribers, 1
//! publisher, 1000 messages, window 32 by default), BENCH_ROUNDS (3),
//! SERVER_CPUS and CLIENT_CPUS as for every load test.
//!
//! Figures: deliveries/s and latency of both fan-outs and their ratio (the
//! goal: at least 0.8), ping and RPC round trip p50/p99. Medians over the
//! rounds, each round printed too. Writes `target/bench-results/handlers.json`.

// `load` can spawn the baseline; this bench does not.
#[allow(dead_code)]
mod baseline;
mod load;

use actix::prelude::*;
use serde_json::{json, Value};

use holdfast::actors::supervision::{Child, ChildSpec};
use holdfast::server::config::NamespaceSettings;
use holdfast::server::handlers::{
    Accept, JoinRequest, LeaveNotice, PublishRequest, Rejection, Rpc,
};
use holdfast::server::Builder;

use load::rtt::{round_trips, Request};
use load::{Metric, RawWs, Server, Setup};

/// Set in the environment of the server this bench starts.
const APP_ENV: &str = "HOLDFAST_BENCH_APP";
/// The namespace whose rooms go through the pass-through handler.
const PASS: &str = "pass:";

/// Accepts everything as sent.
struct PassThrough;

impl Actor for PassThrough {
    type Context = Context<Self>;
}

impl Child for PassThrough {}

impl Handler<JoinRequest> for PassThrough {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, _: JoinRequest, _: &mut Context<Self>) -> Self::Result {
        Ok(Accept::AsSent)
    }
}

impl Handler<PublishRequest> for PassThrough {
    type Result = Result<Accept, Rejection>;

    fn handle(&mut self, _: PublishRequest, _: &mut Context<Self>) -> Self::Result {
        Ok(Accept::AsSent)
    }
}

impl Handler<LeaveNotice> for PassThrough {
    type Result = ();

    fn handle(&mut self, _: LeaveNotice, _: &mut Context<Self>) {}
}

/// Answers each call's `data`.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Child for Echo {}

impl Handler<Rpc> for Echo {
    type Result = Result<Value, Rejection>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        Ok(rpc.data)
    }
}

/// With [`APP_ENV`] set, this process is the server: serve until a signal.
fn serve_app_if_asked() {
    if std::env::var_os(APP_ENV).is_none() {
        return;
    }
    std::process::exit(holdfast::server::cli::run(|mut settings| {
        settings
            .rooms
            .namespaces
            .push(NamespaceSettings::new(PASS).handler("pass"));
        Builder::new(settings)
            .room_handler("pass", ChildSpec::new("pass", |_| PassThrough))
            .rpc("bench.", ChildSpec::new("echo", |_| Echo))
    }));
}

/// The figures of one round.
struct Round {
    plain: Vec<Metric>,
    pass: Vec<Metric>,
    ping: Vec<u64>,
    rpc: Vec<u64>,
}

fn value(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.value)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn round(
    rt: &tokio::runtime::Runtime,
    setup: &Setup,
    server: &mut Server,
    fanout: load::fanout::Config,
    plain_first: bool,
    trips: u64,
    warmup: u64,
) -> Result<Round, String> {
    let (plain, pass) = if plain_first {
        let plain = load::fanout::run(rt, setup, server, fanout, "")?;
        (plain, load::fanout::run(rt, setup, server, fanout, PASS)?)
    } else {
        let pass = load::fanout::run(rt, setup, server, fanout, PASS)?;
        (load::fanout::run(rt, setup, server, fanout, "")?, pass)
    };
    let url = server.url.clone();
    let (ping, rpc) = rt.block_on(async move {
        let mut ws = RawWs::connect(&url, 4096).await?;
        let echo = Request::Rpc("bench.echo");
        round_trips(&mut ws, Request::Ping, 0, warmup, false).await?;
        round_trips(&mut ws, echo, 0, warmup, false).await?;
        let ping = round_trips(&mut ws, Request::Ping, warmup, trips, true).await?;
        let rpc = round_trips(&mut ws, echo, warmup, trips, true).await?;
        Ok::<_, String>((ping, rpc))
    })?;
    Ok(Round {
        plain,
        pass,
        ping,
        rpc,
    })
}

fn main() {
    serve_app_if_asked();
    let fanout = load::fanout::Config::from_env();
    let rounds: usize = load::env_or("BENCH_ROUNDS", 3usize).max(1);
    let trips: u64 = load::env_or("HANDLERS_ROUND_TRIPS", 10_000u64).max(1);
    let warmup: u64 = load::env_or("HANDLERS_WARMUP", 500u64);
    let setup = Setup::new((fanout.subscribers + fanout.publishers) as u64);
    let rt = setup.runtime();
    let exe = std::env::current_exe().expect("this bench's path");
    let mut done = Vec::new();
    for n in 1..=rounds {
        let mut server = match load::spawn_holdfast_from(&setup, &exe, &[(APP_ENV, "1")]) {
            Ok(server) => server,
            Err(e) => panic!("the application server did not start: {e}"),
        };
        let r = round(&rt, &setup, &mut server, fanout, n % 2 == 1, trips, warmup);
        if r.is_err() {
            server.print_log_tail();
        }
        server.stop();
        let mut r = r.unwrap_or_else(|e| panic!("round {n}: {e}"));
        let (plain, pass) = (
            value(&r.plain, "deliveries/s").unwrap_or(0.0),
            value(&r.pass, "deliveries/s").unwrap_or(0.0),
        );
        r.ping.sort_unstable();
        r.rpc.sort_unstable();
        println!(
            "round {n}/{rounds}: deliveries/s no handler {plain:.0}, pass-through {pass:.0} ({:.2}x); \
             rtt p50 ping {:.1} us, rpc {:.1} us",
            pass / plain,
            load::us(load::pct(&r.ping, 50.0)).unwrap_or(f64::NAN),
            load::us(load::pct(&r.rpc, 50.0)).unwrap_or(f64::NAN),
        );
        done.push(r);
    }
    report(&setup, fanout, trips, &done);
}

/// Prints the medians and writes `target/bench-results/handlers.json`.
fn report(setup: &Setup, fanout: load::fanout::Config, trips: u64, rounds: &[Round]) {
    let fan_rows = [
        ("deliveries/s", "msg/s"),
        ("latency p50", "ms"),
        ("latency p99", "ms"),
        ("lost", "count"),
        ("out of order", "count"),
    ];
    println!();
    println!(
        "handlers: fan-out of {} subscribers x {} messages ({} publisher(s)), no handler vs a pass-through \
         room handler; median of {} rounds",
        fanout.subscribers,
        fanout.messages,
        fanout.publishers,
        rounds.len()
    );
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "", "no handler", "pass-through", "ratio"
    );
    let mut fan_json = serde_json::Map::new();
    for (name, unit) in fan_rows {
        let plain = median(
            rounds
                .iter()
                .filter_map(|r| value(&r.plain, name))
                .collect(),
        );
        let pass = median(rounds.iter().filter_map(|r| value(&r.pass, name)).collect());
        let ratio = plain.zip(pass).and_then(|(a, b)| (a > 0.0).then(|| b / a));
        println!(
            "{:<28} {:>14} {:>14} {:>8}",
            format!("{name} ({unit})"),
            load::fmt_value(plain),
            load::fmt_value(pass),
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
        );
        fan_json.insert(
            name.into(),
            json!({"unit": unit, "no_handler": plain, "pass_through": pass, "ratio": ratio}),
        );
    }
    let per_round: Vec<f64> = rounds
        .iter()
        .filter_map(|r| Some(value(&r.pass, "deliveries/s")? / value(&r.plain, "deliveries/s")?))
        .collect();
    println!(
        "{:<28} {}",
        "ratio per round",
        per_round
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "round trip, one connection, {trips} sequential requests per round (all rounds pooled)"
    );
    println!("{:<28} {:>14} {:>14} {:>8}", "", "ping", "rpc", "ratio");
    let pooled = |pick: fn(&Round) -> &Vec<u64>| {
        let mut all: Vec<u64> = rounds
            .iter()
            .flat_map(|r| pick(r).iter().copied())
            .collect();
        all.sort_unstable();
        all
    };
    let (ping, rpc) = (pooled(|r| &r.ping), pooled(|r| &r.rpc));
    let mut rtt_json = serde_json::Map::new();
    for p in [50.0, 99.0, 99.9] {
        let (a, b) = (
            load::us(load::pct(&ping, p)).unwrap_or(f64::NAN),
            load::us(load::pct(&rpc, p)).unwrap_or(f64::NAN),
        );
        println!(
            "{:<28} {:>14.1} {:>14.1} {:>7.2}x",
            format!("p{p} (us)"),
            a,
            b,
            b / a
        );
        rtt_json.insert(format!("p{p}_us"), json!({"ping": a, "rpc": b}));
    }
    let out = json!({
        "bench": "handlers",
        "setup": setup.describe(),
        "fanout": fanout.describe(),
        "rounds": rounds.len(),
        "round_trips_per_round": trips,
        "fanout_medians": fan_json,
        "fanout_ratio_per_round": per_round,
        "round_trip": rtt_json,
    });
    let dir = load::results_dir();
    let path = dir.join("handlers.json");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap_or_default()));
    match written {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
