//! Persistence against real databases: SQLite files and the PostgreSQL on
//! 127.0.0.1:5432 (skipped, with a message, where it is absent; a failure
//! under `CI=true`).

mod common;

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use holdfast::actors::shutdown::ShutdownReason;
use holdfast::server::{Builder, Server, Settings};
use serde_json::json;

use common::services::{drop_database, fresh_postgres, Proxy};
use common::ws::connect;
use common::{get, settings, wait_until};

use holdfast::actors::db::schema::sessions;

fn with_db(url: &str) -> Settings {
    let mut s = settings();
    s.database.url = serde_json::from_value(json!(url)).unwrap();
    s.database.probe_interval_ms = 100;
    s.session.flush_interval_ms = 50;
    s
}

async fn start(s: Settings) -> Server {
    Builder::new(s).start().await.expect("server starts")
}

/// Session ids stored in the database behind `url`.
async fn stored_sessions(url: &str) -> Vec<(String, Option<i64>)> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
        // The server's connections may still hold a lock for a moment (a
        // load under SQLITE_BUSY read as "no rows" once, under a full run).
        diesel::RunQueryDsl::execute(diesel::sql_query("PRAGMA busy_timeout = 5000"), &mut conn)
            .unwrap();
        let query = sessions::table.select((sessions::id, sessions::expires_at));
        return diesel::RunQueryDsl::load(query, &mut conn).expect("the sessions table reads");
    }
    let Ok(mut conn) = AsyncPgConnection::establish(url).await else {
        return Vec::new();
    };
    let query = sessions::table.select((sessions::id, sessions::expires_at));
    diesel_async::RunQueryDsl::load(query, &mut conn)
        .await
        .unwrap_or_default()
}

async fn stop(server: Server) {
    server
        .shutdown_handle()
        .request(ShutdownReason::Requested { by: "test".into() });
    let report = server.run_until_stopped().await;
    assert_eq!(report.exit_code, 0);
}

/// From an empty database: migrations run, `/health/db` shows the pool, a
/// session is written behind, and after a graceful restart a client resumes
/// it and the room's offsets continue in the same epoch.
async fn round_trip(url: &str) {
    let server = start(with_db(url)).await;
    let (status, _, db) = get(&server, "/health/db").await;
    assert_eq!(status, 200, "{db}");
    assert_eq!(db["status"], "healthy", "{db}");
    let pool = &db["details"]["pool"];
    assert_eq!(pool["max"], 10, "{db}");
    for k in ["size", "idle", "in_use", "waiters", "usage_pct"] {
        assert!(pool[k].is_number(), "{k} in {db}");
    }
    assert!(db["details"]["latency_ms"].as_f64().unwrap() >= 0.0);

    let mut c = connect(server.addr()).await;
    let session = c.session();
    let epoch = c.join("ledger").await["epoch"].clone();
    for i in 1..=3 {
        assert_eq!(
            c.request(json!({"type": "publish", "room": "ledger", "data": i}))
                .await["offset"],
            i
        );
    }
    wait_until("the session row", Duration::from_secs(10), || async {
        stored_sessions(url)
            .await
            .iter()
            .any(|(id, _)| *id == session)
    })
    .await;
    drop(c);
    stop(server).await;
    // The closed session was written with its expiry.
    let rows = stored_sessions(url).await;
    let row = rows
        .iter()
        .find(|(id, _)| *id == session)
        .expect("row after shutdown");
    assert!(row.1.is_some(), "a detached session has an expiry: {row:?}");

    let server = start(with_db(url)).await;
    let mut c = connect(server.addr()).await;
    let resumed = c
        .request(json!({"type": "resume", "session": session, "rooms": {"ledger": 3}, "epochs": {"ledger": epoch}, "id": 1}))
        .await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(
        resumed["session"],
        session.as_str(),
        "the old session survived the restart"
    );
    assert_eq!(
        resumed["rooms"]["ledger"],
        json!({"replayed": 0, "complete": true, "epoch": epoch})
    );
    let ack = c
        .request(json!({"type": "publish", "room": "ledger", "data": 4}))
        .await;
    assert_eq!(
        ack["offset"], 4,
        "offsets continue after a graceful restart: {ack}"
    );
    stop(server).await;
}

/// SQLite: migrations, write-behind, pool stats and a graceful restart with resume.
#[actix_rt::test]
async fn sqlite_round_trip_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/holdfast.db", dir.path().display());
    round_trip(&url).await;
    assert!(
        dir.path().join("data/holdfast.db").exists(),
        "created on first start"
    );
}

/// PostgreSQL: the same, on a fresh database.
#[actix_rt::test]
async fn postgres_round_trip_across_a_restart() {
    let Some((name, url)) = fresh_postgres("postgres_round_trip_across_a_restart").await else {
        return;
    };
    round_trip(&url).await;
    drop_database(&name).await;
}

/// A database unreachable at start: the server starts anyway, ready but
/// degraded, and turns healthy by itself once the database is reachable.
#[actix_rt::test]
async fn an_unreachable_database_at_start_degrades_then_recovers() {
    let Some((name, _)) =
        fresh_postgres("an_unreachable_database_at_start_degrades_then_recovers").await
    else {
        return;
    };
    let mut proxy = Proxy::reserve();
    let mut s = with_db(&proxy.url(&name));
    s.database.connect_retries = 2;
    s.database.retry_base_ms = 20;
    let began = Instant::now();
    let server = start(s).await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "start-up is bounded by the retries"
    );
    assert_eq!(
        get(&server, "/health/ready").await.0,
        200,
        "a non-critical database does not block readiness"
    );
    let (status, _, body) = get(&server, "/health").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("degraded")),
        "{body}"
    );
    let (status, _, db) = get(&server, "/health/db").await;
    assert_eq!(status, 503);
    assert!(
        db["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{db}"
    );
    // Sessions keep working from memory meanwhile.
    let c = connect(server.addr()).await;

    proxy.start().await;
    let back = Instant::now();
    wait_until("/health/db healthy", Duration::from_secs(10), || async {
        get(&server, "/health/db").await.2["status"] == "healthy"
    })
    .await;
    eprintln!(
        "FIGURE db back up -> /health/db healthy: {} ms",
        back.elapsed().as_millis()
    );
    wait_until(
        "the pending session written",
        Duration::from_secs(10),
        || async {
            stored_sessions(&proxy.url(&name))
                .await
                .iter()
                .any(|(id, _)| *id == c.session())
        },
    )
    .await;
    assert_eq!(get(&server, "/health").await.2["status"], "healthy");
    stop(server).await;
    proxy.stop().await;
    drop_database(&name).await;
}

/// With the database going away at run time, sessions keep working from
/// memory, writes stay pending, and every one of them is in the database
/// once it is back.
#[actix_rt::test]
async fn write_behind_keeps_pending_writes_through_an_outage() {
    let Some((name, _)) =
        fresh_postgres("write_behind_keeps_pending_writes_through_an_outage").await
    else {
        return;
    };
    let mut proxy = Proxy::reserve();
    proxy.start().await;
    let server = start(with_db(&proxy.url(&name))).await;
    assert_eq!(get(&server, "/health/db").await.2["status"], "healthy");
    proxy.stop().await;
    wait_until("the outage noticed", Duration::from_secs(10), || async {
        get(&server, "/health/db").await.2["status"] == "unhealthy"
    })
    .await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = connect(server.addr()).await;
        c.join("outage").await; // the realtime path never waits on the database
        ids.push(c.session());
        clients.push(c);
    }
    let (_, _, sessions) = get(&server, "/health/sessions").await;
    assert!(
        sessions["details"]["pending_writes"].as_u64().unwrap() >= 20,
        "{sessions}"
    );
    assert_eq!(sessions["status"], "degraded", "{sessions}");

    proxy.start().await;
    wait_until(
        "every pending write in the database",
        Duration::from_secs(15),
        || async {
            let stored = stored_sessions(&proxy.url(&name)).await;
            ids.iter().all(|id| stored.iter().any(|(s, _)| s == id))
        },
    )
    .await;
    wait_until("no pending write left", Duration::from_secs(5), || async {
        get(&server, "/health/sessions").await.2["details"]["pending_writes"] == 0
    })
    .await;
    drop(clients);
    stop(server).await;
    proxy.stop().await;
    drop_database(&name).await;
}

/// A pool kept at or above 80 % usage publishes `db.pool_saturated` (and
/// counts it); once usage falls below 70 %, `db.pool_recovered`.
#[actix_rt::test]
async fn pool_saturation_and_recovery_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = with_db(&format!("sqlite://{}/h.db", dir.path().display()));
    s.database.max_size = 2;
    let server = start(s).await;
    let kind = |topic: &'static str| {
        let events = server.tree().kernel().events.clone();
        move || {
            let events = events.clone();
            async move {
                events.recent(1000).iter().any(|e| {
                    matches!(&e.event, holdfast::actors::events::Event::Custom { topic: t, .. } if t == topic)
                })
            }
        }
    };
    let holdfast::actors::db::Pool::Sqlite(pool) = server.db().pool() else {
        panic!("sqlite expected")
    };
    let held = (pool.get().await.unwrap(), pool.get().await.unwrap()); // 2 of 2 in use
    wait_until(
        "db.pool_saturated",
        Duration::from_secs(10),
        kind("db.pool_saturated"),
    )
    .await;
    assert!(!kind("db.pool_recovered")().await);
    drop(held);
    wait_until(
        "db.pool_recovered",
        Duration::from_secs(10),
        kind("db.pool_recovered"),
    )
    .await;
    let text = common::metrics_text(&server).await;
    assert!(
        text.contains("holdfast_db_pool_saturation_events_total{kind=\"saturated\"} 1"),
        "{text}"
    );
    assert!(text.contains("holdfast_db_pool_saturation_events_total{kind=\"recovered\"} 1"));
    stop(server).await;
}

/// Two nodes on one PostgreSQL: a session created on node A, after its
/// socket closed there, is adopted by a `resume` on node B (which never had
/// it in memory: B started before the session existed).
#[actix_rt::test]
async fn a_session_created_on_another_node_is_adopted_from_the_database() {
    let Some((name, url)) =
        fresh_postgres("a_session_created_on_another_node_is_adopted_from_the_database").await
    else {
        return;
    };
    let a = start(with_db(&url)).await;
    let b = start(with_db(&url)).await;

    let mut c = connect(a.addr()).await;
    let session = c.session();
    c.join("desk").await;
    c.ws.close(None).await.unwrap();
    // Node A writes the closed session behind, with its expiry.
    wait_until(
        "the detached session row",
        Duration::from_secs(10),
        || async {
            stored_sessions(&url)
                .await
                .iter()
                .any(|(id, expires)| *id == session && expires.is_some())
        },
    )
    .await;

    let mut c = connect(b.addr()).await;
    assert_ne!(c.session(), session);
    let resumed = c
        .request(json!({"type": "resume", "session": session, "rooms": {"desk": 0}, "id": 1}))
        .await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(
        resumed["session"],
        session.as_str(),
        "node B adopted node A's session: {resumed}"
    );
    assert_eq!(resumed["rooms"]["desk"]["complete"], true, "{resumed}");
    // The adopted session is in the desk room on node B.
    let ack = c
        .request(json!({"type": "publish", "room": "desk", "data": "here"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");

    stop(a).await;
    stop(b).await;
    drop_database(&name).await;
}

/// While start-up still loads sessions and room offsets (here: a database
/// that does not answer, retried), `/ws` refuses with 503 rather than
/// hand out a session that a `resume` would not find and a room epoch the
/// checkpoint then replaces; once ready, it upgrades.
#[actix_rt::test]
async fn websocket_upgrades_wait_for_the_end_of_start_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // dropped: nothing listens there
    let mut s = with_db(&format!("postgres://holdfast@127.0.0.1:{closed}/none"));
    s.server.port = port;
    s.database.connect_retries = 3;
    s.database.retry_base_ms = 250;
    holdfast::actors::tls::install_default_provider();
    let starting = actix_rt::spawn(start(s));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let url = format!("http://{addr}/health/ready");
    wait_until(
        "HTTP answers during start-up",
        Duration::from_secs(10),
        || async { reqwest::get(&url).await.is_ok() },
    )
    .await;
    assert!(!starting.is_finished(), "start-up is still going on");
    assert_eq!(
        common::ws::try_connect(addr, "", &[]).await.err(),
        Some(503),
        "refused while starting"
    );
    let server = starting.await.unwrap();
    let c = connect(server.addr()).await;
    assert!(!c.session().is_empty());
    stop(server).await;
}

/// A session store of its own on the database behind `url`, as the server
/// builds one: its `db` actor (kept alive by the tree) has found the
/// database up and migrated it.
async fn store_on(
    url: &str,
    max_pending: usize,
    max_detached: usize,
) -> (
    std::sync::Arc<holdfast::actors::sessions::PersistentSessions>,
    holdfast::actors::Tree,
) {
    use holdfast::actors::db::Db;
    use holdfast::actors::sessions::PersistentSessions;
    use holdfast::actors::shutdown::Shutdown;
    use holdfast::actors::supervision::SupervisorSpec;
    use holdfast::actors::{Kernel, KernelSettings, Tree};
    let registry = prometheus::Registry::new();
    let (shutdown, _events) = Shutdown::new();
    let kernel = Kernel::new(registry.clone(), shutdown, &KernelSettings::default()).unwrap();
    let db = Db::new(with_db(url).database, &registry, kernel.events.clone()).unwrap();
    let tree = Tree::start(&kernel, SupervisorSpec::new("root").child(db.spec())).unwrap();
    db.started().await;
    assert!(db.is_up(), "the database behind {url} is up");
    let store = PersistentSessions::new(
        Duration::from_secs(300),
        max_pending,
        max_detached,
        db,
        &registry,
    )
    .unwrap();
    (store, tree)
}

/// Waits until the wall clock is past its current millisecond, so that
/// sessions detached before and after expire at distinct times.
async fn next_millisecond() {
    let now = holdfast::actors::clock::now_unix_ms();
    wait_until(
        "the next millisecond",
        Duration::from_secs(1),
        || async move { holdfast::actors::clock::now_unix_ms() > now },
    )
    .await;
}

/// A session that ended here is never adopted back from its row, not even
/// while a flush is writing the row's delete (held back here by a row lock
/// another connection takes): a `resume` of it starts a new session.
#[actix_rt::test]
async fn a_session_whose_delete_is_being_written_is_not_adopted_again() {
    use diesel_async::SimpleAsyncConnection;
    use holdfast::actors::sessions::SessionStore;
    let test = "a_session_whose_delete_is_being_written_is_not_adopted_again";
    let Some((name, url)) = fresh_postgres(test).await else {
        return;
    };
    let (store, _tree) = store_on(&url, 100, 100).await;
    store.create("ended", "u1");
    store.detach("ended", Default::default());
    store.flush_all().await.unwrap();
    assert_eq!(stored_sessions(&url).await.len(), 1);

    store.remove("ended"); // its row waits to be deleted
    let mut locker = AsyncPgConnection::establish(&url).await.unwrap();
    locker
        .batch_execute("BEGIN; SELECT id FROM sessions WHERE id = 'ended' FOR UPDATE")
        .await
        .unwrap();
    let flushing = actix_rt::spawn({
        let store = store.clone();
        async move { store.flush_once().await }
    });
    // The flush took the delete and waits on the row's lock.
    wait_until(
        "the flush's delete waiting on the lock",
        Duration::from_secs(10),
        || {
            let (url, name) = (url.clone(), name.clone());
            async move {
                let mut watcher = AsyncPgConnection::establish(&url).await.unwrap();
                let waiting = diesel::sql_query(format!(
                    "SELECT pid FROM pg_stat_activity \
                     WHERE datname = '{name}' AND wait_event_type = 'Lock'"
                ));
                diesel_async::RunQueryDsl::execute(waiting, &mut watcher)
                    .await
                    .unwrap()
                    > 0
            }
        },
    )
    .await;
    assert_eq!(
        store.clone().fetch("ended".into()).await,
        None,
        "adopted from the row its delete is being written for"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(flushing.await.unwrap().unwrap(), 1);
    assert!(stored_sessions(&url).await.is_empty());
    assert_eq!(store.clone().fetch("ended".into()).await, None);
    drop(locker);
    drop_database(&name).await;
}

/// A node starting on a database that holds more detached sessions than its
/// `session.max_detached` loads the ones that expire last and leaves the
/// others' rows alone: they may be another node's, and that node's clients
/// still resume them there.
#[actix_rt::test]
async fn warming_past_max_detached_deletes_no_rows() {
    use holdfast::actors::sessions::SessionStore;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/holdfast.db", dir.path().display());
    let (a, _a) = store_on(&url, 100, 100).await;
    for i in 0..10 {
        let id = format!("s{i}");
        a.create(&id, "u1");
        a.detach(&id, Default::default());
        next_millisecond().await; // distinct expiries, in order
    }
    a.flush_all().await.unwrap();

    let (b, _b) = store_on(&url, 100, 3).await;
    assert_eq!(b.warm().await.unwrap(), 3);
    assert_eq!(b.detached(), 3);
    for i in 7..10 {
        assert!(
            b.get(&format!("s{i}")).is_some(),
            "s{i}, among the latest to expire"
        );
    }
    b.flush_all().await.unwrap();
    assert_eq!(
        stored_sessions(&url).await.len(),
        10,
        "every row still there"
    );
    // Node A's clients still resume their sessions on A.
    assert!(a.clone().fetch("s0".into()).await.is_some());
}

/// A session forgotten between a `resume`'s lookup and its attach (evicted
/// past `session.max_detached` by other sessions closing meanwhile) is not
/// attached: the resume sees it gone, and no session the store no longer
/// holds is handed to a client. A session still held is attached, and
/// attached it is never evicted.
#[actix_rt::test]
async fn a_session_forgotten_since_its_lookup_is_not_attached() {
    use holdfast::actors::sessions::SessionStore;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/holdfast.db", dir.path().display());
    let (store, _tree) = store_on(&url, 100, 2).await;
    for id in ["looked-up", "kept"] {
        store.create(id, "u1");
        store.detach(id, Default::default());
        next_millisecond().await; // distinct expiries, in order
    }
    let looked_up = store.get("looked-up").expect("held when looked up");
    // Meanwhile another session closes: the one expiring first goes.
    store.create("other", "u2");
    store.detach("other", Default::default());
    assert_eq!(store.attach(&looked_up.id), None, "forgotten meanwhile");
    assert_eq!(store.get("looked-up"), None);

    let kept = store.attach("kept").expect("still held");
    assert_eq!(kept.user, "u1");
    for i in 0..5 {
        let id = format!("more-{i}");
        store.create(&id, "u3");
        store.detach(&id, Default::default());
    }
    assert!(store.get("kept").is_some(), "attached: never evicted");
    store.flush_all().await.unwrap();
    let rows: Vec<String> = stored_sessions(&url)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert!(!rows.contains(&"looked-up".to_owned()), "{rows:?}");
    assert!(rows.contains(&"kept".to_owned()), "{rows:?}");
}

/// The write-behind writes a batch of more sessions than one statement
/// holds, and writes them again when they change, on both databases.
async fn batch_round_trip(url: &str) {
    use holdfast::actors::sessions::SessionStore;
    const SESSIONS: usize = 250; // 100 rows per statement: 100, 100, 50
    let (store, _tree) = store_on(url, 1000, 1000).await;
    for i in 0..SESSIONS {
        store.create(&format!("b{i}"), "u1");
    }
    assert_eq!(store.flush_all().await.unwrap(), SESSIONS);
    let stored = stored_sessions(url).await;
    assert_eq!(stored.len(), SESSIONS, "every session written");
    assert!(
        stored.iter().all(|(_, expires)| expires.is_none()),
        "attached"
    );
    for i in 0..120 {
        store.detach(&format!("b{i}"), Default::default());
    }
    assert_eq!(store.flush_all().await.unwrap(), 120);
    let stored: std::collections::HashMap<_, _> = stored_sessions(url).await.into_iter().collect();
    assert_eq!(stored.len(), SESSIONS, "updated in place");
    for i in 0..SESSIONS {
        let expires = stored[&format!("b{i}")];
        assert_eq!(expires.is_some(), i < 120, "b{i}: {expires:?}");
    }
}

#[actix_rt::test]
async fn sqlite_writes_and_rewrites_a_batch_of_sessions() {
    let dir = tempfile::tempdir().unwrap();
    batch_round_trip(&format!("sqlite://{}/holdfast.db", dir.path().display())).await;
}

#[actix_rt::test]
async fn postgres_writes_and_rewrites_a_batch_of_sessions() {
    let Some((name, url)) =
        fresh_postgres("postgres_writes_and_rewrites_a_batch_of_sessions").await
    else {
        return;
    };
    batch_round_trip(&url).await;
    drop_database(&name).await;
}
