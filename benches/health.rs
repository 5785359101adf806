//! `GET /health` with 100 supervised actors, through a real HTTP client on
//! loopback. Goal: under 5 ms.
//!
//! `cargo bench --bench health` (HEALTH_ACTORS, HEALTH_REQUESTS to change).

mod common;

use std::time::Instant;

use actix::prelude::*;
use holdfast::actors::health::{Health, HealthReply};
use holdfast::actors::supervision::{Child, ChildSpec};
use holdfast::server::{Builder, Settings};

struct Worker {
    id: usize,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Child for Worker {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        Health::healthy().with("id", self.id).into()
    }
}

fn main() {
    let actors: usize = std::env::var("HEALTH_ACTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let requests: usize = std::env::var("HEALTH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    actix_rt::System::new().block_on(async move {
        let mut settings = Settings::defaults();
        settings.server.port = 0;
        settings.log.level = "warn".into();
        let mut builder = Builder::new(settings);
        for id in 0..actors {
            builder = builder.service(ChildSpec::new(format!("worker-{id}"), move |_| Worker { id }).critical(false));
        }
        let server = builder.start().await.unwrap();
        let url = format!("http://{}/health", server.addr());
        let client = reqwest::Client::new();
        let body: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let checks = body["checks"].as_object().unwrap().len();
        assert!(checks >= actors, "only {checks} checks");
        for _ in 0..50 {
            client.get(&url).send().await.unwrap().bytes().await.unwrap();
        }
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t0 = Instant::now();
            let res = client.get(&url).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.bytes().await.unwrap();
            samples.push(t0.elapsed());
        }
        println!("GET /health with {actors} supervised actors ({checks} checks in the answer), sequential, keep-alive");
        common::Samples::new(samples).print("/health round trip");
    });
}
