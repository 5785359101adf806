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
