//! SQLite through Holdfast's pool on actix's current-thread runtimes: a
//! query whose future is dropped before it finished (a timeout, an actor
//! stopping, a handler past its deadline) must neither panic nor spoil the
//! connection for the next user. diesel-async's own wrapper waits for the
//! dropped query with `block_in_place`, which panics on a current-thread
//! runtime ("can call blocking only when running on the multi-threaded
//! runtime"): the network fuzzer hit it when the session sweep timed out
//! under load.

mod common;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use holdfast::actors::db::{Db, DbError};
use holdfast::actors::events::Events;
use holdfast::actors::metrics::KernelMetrics;

/// A query that keeps SQLite busy for a while (a few hundred ms).
async fn slow(db: &Db) -> Result<(), DbError> {
    holdfast::actors::with_conn!(db, |conn| {
        diesel::sql_query(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) \
             SELECT count(*) FROM c",
        )
        .execute(conn)
        .await?;
    });
    Ok(())
}

async fn one(db: &Db) -> Result<i32, DbError> {
    use diesel::IntoSql;
    let n = holdfast::actors::with_conn!(db, |conn| {
        diesel::select(1i32.into_sql::<diesel::sql_types::Integer>())
            .get_result::<i32>(conn)
            .await?
    });
    Ok(n)
}

#[actix_rt::test]
async fn a_query_dropped_mid_flight_neither_panics_nor_spoils_the_connection() {
    let mut settings = common::settings().database;
    settings.max_size = 1; // the next query gets the same connection
    settings.min_idle = 0;
    let registry = prometheus::Registry::new();
    let events = Events::new(16, Arc::new(KernelMetrics::new(registry.clone()).unwrap()));
    let db = Db::new(settings, &registry, events).unwrap();
    assert_eq!(one(&db).await.expect("the database answers"), 1);

    for _ in 0..3 {
        let dropped = tokio::time::timeout(Duration::from_millis(20), slow(&db)).await;
        assert!(dropped.is_err(), "the slow query outlived the timeout");
        assert_eq!(one(&db).await.expect("the connection is usable after"), 1);
    }
}

/// Runs `sql` through the pool.
async fn execute(db: &Db, sql: &str) -> Result<(), DbError> {
    holdfast::actors::with_conn!(db, |conn| {
        diesel::sql_query(sql).execute(conn).await?;
    });
    Ok(())
}

/// A connection of another process to the database at `path`, which waits
/// for a lock as the server's do (`busy_timeout`) instead of failing at once.
fn patient(path: &str) -> diesel::sqlite::SqliteConnection {
    use diesel::Connection;
    let mut conn = diesel::sqlite::SqliteConnection::establish(path).unwrap();
    diesel::RunQueryDsl::execute(diesel::sql_query("PRAGMA busy_timeout = 5000"), &mut conn)
        .unwrap();
    conn
}

/// A write dropped while it waits for SQLite's write lock (another process
/// holds it) costs the thread that dropped it nothing: the call is left to
/// finish on the blocking pool, its connection is not used again, and the
/// pool serves the next query on a new one. Before, the drop waited for the
/// call, up to `busy_timeout` (5 s), stalling every connection of that
/// actix thread, and the write had failed by the time the lock was free.
#[actix_rt::test]
async fn a_write_dropped_while_waiting_for_the_lock_stalls_nothing() {
    let mut settings = common::settings().database;
    settings.max_size = 1;
    settings.min_idle = 0;
    let path = holdfast::actors::db::sqlite_path(settings.url.expose()).to_owned();
    let registry = prometheus::Registry::new();
    let events = Events::new(16, Arc::new(KernelMetrics::new(registry.clone()).unwrap()));
    let db = Db::new(settings, &registry, events).unwrap();
    execute(&db, "CREATE TABLE t (x INTEGER)")
        .await
        .expect("the table");

    // Another process's writer holds the lock until told to let go.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let path = path.clone();
        move || {
            let mut conn = patient(&path);
            diesel::RunQueryDsl::execute(diesel::sql_query("BEGIN IMMEDIATE"), &mut conn).unwrap();
            locked.send(()).unwrap();
            released.recv().unwrap();
            diesel::RunQueryDsl::execute(diesel::sql_query("COMMIT"), &mut conn).unwrap();
        }
    });
    is_locked.recv().unwrap();

    let write = execute(&db, "INSERT INTO t VALUES (1)");
    let dropped = tokio::time::timeout(Duration::from_millis(100), write).await;
    assert!(dropped.is_err(), "the write waited for the lock");
    // Dropped with its call still waiting on the lock: letting go of the
    // lock now lets that call land. (Had the drop waited for the call, the
    // call would have failed with SQLITE_BUSY before this line.)
    release.send(()).unwrap();
    holder.join().unwrap();
    let count = || {
        let mut conn = patient(&path);
        let count = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM t)",
        ));
        diesel::RunQueryDsl::get_result::<i64>(count, &mut conn).unwrap()
    };
    common::wait_until(
        "the dropped write landed",
        Duration::from_secs(10),
        || async { count() == 1 },
    )
    .await;
    assert_eq!(one(&db).await.expect("the pool serves the next query"), 1);
}
