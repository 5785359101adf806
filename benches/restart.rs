//! Restart latency: from a panic inside a supervised actor's handler to the
//! restarted actor answering a message. Goal: p50 under 1 ms.
//!
//! `cargo bench --bench restart` (set RESTART_ITERATIONS to change the count).
//! The victim uses `Backoff::none()`, i.e. it measures the supervision
//! mechanism itself; with the default back-off the first restart after a
//! healthy run is immediate too, and consecutive crashes wait on purpose.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use holdfast::actors::shutdown::Shutdown;
use holdfast::actors::supervision::{Backoff, Child, ChildSpec, Intensity, SupervisorSpec};
use holdfast::actors::{Kernel, KernelSettings, Tree};

struct Victim {
    generation: u64,
}

impl Actor for Victim {
    type Context = Context<Self>;
}

impl Child for Victim {}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Victim {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("boom");
    }
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Generation;

impl Handler<Generation> for Victim {
    type Result = u64;
    fn handle(&mut self, _: Generation, _: &mut Context<Self>) -> u64 {
        self.generation
    }
}

fn main() {
    let iterations: usize = std::env::var("RESTART_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    // Thousands of intended panics need no backtrace; any other panic does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if holdfast::actors::supervision::panic_message(info.payload()) != "boom" {
            default_hook(info);
        }
    }));
    actix_rt::System::new().block_on(async move {
        let (shutdown, _events) = Shutdown::new();
        let kernel = Kernel::new(
            prometheus::Registry::new(),
            shutdown,
            &KernelSettings::default(),
        )
        .unwrap();
        let spec = ChildSpec::new("victim", |cctx| Victim {
            generation: cctx.generation,
        })
        .backoff(Backoff::none());
        let victim = spec.child_ref();
        let root = SupervisorSpec::new("root")
            .intensity(Intensity {
                max_restarts: u32::MAX,
                window: Duration::from_secs(1),
                max_consecutive: u32::MAX,
            })
            .child(spec);
        let tree = Tree::start(&kernel, root).unwrap();
        tree.health().await; // every actor started and answered

        let mut samples = Vec::with_capacity(iterations);
        for expected in 1..=iterations as u64 {
            let addr = victim.addr().expect("running");
            assert_eq!(addr.send(Generation).await.unwrap(), expected - 1);
            let t0 = Instant::now();
            addr.do_send(Boom);
            loop {
                if let Some(addr) = victim.addr() {
                    if let Ok(g) = addr.send(Generation).await {
                        if g == expected {
                            break;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            samples.push(t0.elapsed());
        }
        println!("restart latency: panic in a handler -> restarted actor answers");
        common::Samples::new(samples).print("restart (one-for-one, Backoff::none)");
    });
}
