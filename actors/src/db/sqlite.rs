//! The SQLite pool's connections: [`SqliteConn`], diesel's connection behind
//! diesel-async's `SyncConnectionWrapper` with its calls run by
//! [`Blocking`], and [`SqliteManager`], which makes them for bb8 and
//! discards one whose call was abandoned (see `blocking`).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_async::pooled_connection::{PoolError, PoolableConnection, RecyclingMethod};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;

use super::Blocking;

/// What every connection runs first.
const SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;";

/// Opens the database file at `path` and sets the connection up: the one
/// way every SQLite connection is made (the pool's, the migrations'). Blocks.
///
/// # Errors
/// The file cannot be opened, or the set-up statements fail.
pub(super) fn open(path: &str) -> Result<SqliteConnection, diesel::ConnectionError> {
    let mut conn = SqliteConnection::establish(path)?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, SETUP)
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// diesel's SQLite connection, its calls run on tokio's blocking pool.
pub type SqliteWrapper = SyncConnectionWrapper<SqliteConnection, Blocking>;

/// A pooled SQLite connection: derefs to the [`SqliteWrapper`] that queries
/// take (`&mut **pooled`).
pub struct SqliteConn {
    conn: SqliteWrapper,
    /// Set by [`Blocking`] when a call was dropped before it finished.
    abandoned: Arc<AtomicBool>,
}

impl Deref for SqliteConn {
    type Target = SqliteWrapper;

    fn deref(&self) -> &SqliteWrapper {
        &self.conn
    }
}

impl DerefMut for SqliteConn {
    fn deref_mut(&mut self) -> &mut SqliteWrapper {
        &mut self.conn
    }
}

/// Makes, checks and discards the SQLite pool's connections.
pub struct SqliteManager {
    path: String,
}

impl SqliteManager {
    /// Connections to the database file at `path`.
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_owned(),
        }
    }
}

impl bb8::ManageConnection for SqliteManager {
    type Connection = SqliteConn;
    type Error = PoolError;

    async fn connect(&self) -> Result<SqliteConn, PoolError> {
        let path = self.path.clone();
        // Opening the file blocks: on the blocking pool, as every call does.
        let conn = tokio::task::spawn_blocking(move || open(&path))
            .await
            .map_err(|e| {
                PoolError::ConnectionError(diesel::ConnectionError::BadConnection(e.to_string()))
            })?
            .map_err(PoolError::ConnectionError)?;
        let blocking = Blocking::new();
        let abandoned = blocking.abandoned();
        let conn = SyncConnectionWrapper::with_runtime(conn, blocking);
        Ok(SqliteConn { conn, abandoned })
    }

    async fn is_valid(&self, conn: &mut SqliteConn) -> Result<(), PoolError> {
        conn.conn
            .ping(&RecyclingMethod::Verified)
            .await
            .map_err(PoolError::QueryError)
    }

    fn has_broken(&self, conn: &mut SqliteConn) -> bool {
        // An abandoned connection first: asking a wrapper whose call still
        // runs for its transaction state would panic.
        std::thread::panicking() || conn.abandoned.load(Ordering::SeqCst) || conn.conn.is_broken()
    }
}
