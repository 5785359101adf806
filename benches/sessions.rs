//! Sessions written per second through the write-behind, on SQLite and on
//! PostgreSQL (the local server on 127.0.0.1:5432, a fresh database; skipped
//! with a message when it is absent).
//!
//! `cargo bench --bench sessions` (SESSIONS_COUNT to change the count).
//! Each session is created in memory (what a connect costs the transport)
//! and then flushed in batched transactions; the figure is rows durably in
//! the database per second of flushing.

mod common;

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use holdfast::actors::db::{Db, DbSettings};
use holdfast::actors::sessions::{PersistentSessions, SessionStore};
use holdfast::actors::shutdown::Shutdown;
use holdfast::actors::{Kernel, KernelSettings};

fn settings(url: &str) -> DbSettings {
    DbSettings {
        url: serde_json::from_value(serde_json::json!(url)).expect("a database URL"),
        critical: false,
        max_size: 10,
        min_idle: 0,
        connect_timeout_ms: 5_000,
        max_lifetime_ms: 3_600_000,
        idle_timeout_ms: 600_000,
        test_on_checkout: false,
        connect_retries: 1,
        retry_base_ms: 100,
        retry_max_ms: 100,
        probe_interval_ms: 1_000,
        probe_timeout_ms: 1_000,
        migrate: true,
    }
}

async fn run(label: &str, url: &str, count: usize) {
    let registry = prometheus::Registry::new();
    let (shutdown, _events) = Shutdown::new();
    let kernel = Kernel::new(registry.clone(), shutdown, &KernelSettings::default()).unwrap();
    let db = Db::new(settings(url), &registry, kernel.events).unwrap();
    db.migrate().await.expect("migrations");
    let store = PersistentSessions::new(
        Duration::from_secs(300),
        count * 2,
        count * 2,
        db,
        &registry,
    )
    .unwrap();
    let created = Instant::now();
    for i in 0..count {
        store.create(&format!("{i:032x}"), &format!("user-{}", i % 1000));
    }
    let create_time = created.elapsed();
    let flushed = Instant::now();
    let written = store.flush_all().await.expect("flush");
    let flush_time = flushed.elapsed();
    assert_eq!(written, count);
    println!(
        "{label:<10} {count} sessions: in memory {:>9.0}/s, written behind {:>8.0}/s ({} ms)",
        count as f64 / create_time.as_secs_f64(),
        count as f64 / flush_time.as_secs_f64(),
        flush_time.as_millis()
    );
}

fn main() {
    let count: usize = std::env::var("SESSIONS_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    actix_rt::System::new().block_on(async move {
        let dir =
            std::env::temp_dir().join(format!("holdfast-bench-sessions-{}", std::process::id()));
        run(
            "sqlite",
            &format!("sqlite://{}/bench.db", dir.display()),
            count,
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        match AsyncPgConnection::establish("postgres://postgres@127.0.0.1:5432/test").await {
            Ok(mut admin) => {
                let name = format!("holdfast_bench_{}", std::process::id());
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
                run(
                    "postgres",
                    &format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    count,
                )
                .await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .await;
            }
            Err(e) => println!("postgres   skipped: not reachable at 127.0.0.1:5432 ({e})"),
        }
    });
}
