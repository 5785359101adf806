//! The session store behind `resume` across restarts and nodes: memory in
//! front, the database behind it, written in batches (write-behind).

use super::cache::Cache;
use super::pending::{Batch, Pending};
use super::upsert::{self, Upsert};
use super::*;

/// A `sessions` row.
#[derive(
    Clone, Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = crate::db::schema::sessions, treat_none_as_default_value = false)]
pub(super) struct Row {
    pub(super) id: String,
    pub(super) user_id: String,
    pub(super) rooms: String,
    pub(super) created_at: i64,
    pub(super) last_seen: i64,
    pub(super) expires_at: Option<i64>,
}

impl Row {
    pub(super) fn of(record: &SessionRecord, expires_at: Option<i64>) -> Self {
        let ms = unix_ms;
        Row {
            id: record.id.clone(),
            user_id: record.user.clone(),
            rooms: serde_json::to_string(&record.rooms).unwrap_or_else(|_| "{}".into()),
            created_at: ms(record.created),
            last_seen: ms(record.last_seen),
            expires_at,
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            user: self.user_id.clone(),
            rooms: serde_json::from_str(&self.rooms).unwrap_or_default(),
            created: from_unix_ms(self.created_at),
            last_seen: from_unix_ms(self.last_seen),
        }
    }
}

/// A cached session and when it expires (Unix ms; `None` while attached).
pub(super) struct Cached {
    pub(super) record: SessionRecord,
    pub(super) expires_at: Option<i64>,
}

impl Cached {
    /// A session read from the database at `now`: one that was attached when
    /// its process stopped counts as detached from `now`, for `ttl` ms.
    fn from_row(row: &Row, now: i64, ttl: i64) -> Self {
        Cached {
            record: row.record(),
            expires_at: Some(row.expires_at.unwrap_or(now.saturating_add(ttl))),
        }
    }
}

/// The session store in front of the database. See the module docs.
pub struct PersistentSessions {
    pub(super) ttl: Duration,
    pub(super) db: crate::db::Db,
    pub(super) cache: Mutex<Cache>,
    /// The changes not yet committed. Locked after `cache` where both are.
    pub(super) pending: Mutex<Pending>,
    /// Set once the sessions in the database were loaded into the cache.
    pub(super) warmed: std::sync::atomic::AtomicBool,
    pub(super) metrics: SessionMetrics,
}

pub(super) struct SessionMetrics {
    pub(super) pending: prometheus::IntGauge,
    pub(super) written: prometheus::IntCounter,
    pub(super) dropped: prometheus::IntCounter,
    pub(super) evicted: prometheus::IntCounter,
}

/// Most changes written in one transaction.
pub(super) const FLUSH_BATCH: usize = 500;

impl PersistentSessions {
    /// A store writing behind to `db`.
    ///
    /// # Errors
    /// Its metrics are registered already.
    pub fn new(
        ttl: Duration,
        max_pending: usize,
        max_detached: usize,
        db: crate::db::Db,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Arc<Self>> {
        let pending = prometheus::IntGauge::new(
            "holdfast_sessions_pending_writes",
            "Session changes not yet written.",
        )?;
        let written = prometheus::IntCounter::new(
            "holdfast_sessions_written_total",
            "Session changes written.",
        )?;
        let dropped = prometheus::IntCounter::new(
            "holdfast_sessions_dropped_writes_total",
            "Session changes dropped because the pending queue was full while the database was down.",
        )?;
        let evicted = prometheus::IntCounter::new(
            "holdfast_sessions_evicted_total",
            "Detached sessions forgotten before their TTL because session.max_detached were held.",
        )?;
        registry.register(Box::new(evicted.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(written.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Arc::new(Self {
            ttl,
            db,
            cache: Mutex::new(Cache::new(max_detached)),
            pending: Mutex::new(Pending::new(max_pending)),
            warmed: std::sync::atomic::AtomicBool::new(false),
            metrics: SessionMetrics {
                pending,
                written,
                dropped,
                evicted,
            },
        }))
    }

    /// Queues a change through `queue`, keeping the metrics.
    fn queue(&self, queue: impl FnOnce(&mut Pending) -> usize) {
        let mut pending = self.pending.lock();
        let dropped = queue(&mut pending);
        self.metrics.dropped.inc_by(dropped as u64);
        self.metrics.pending.set(pending.len() as i64);
    }

    fn delete(&self, id: &str) {
        self.queue(|p| p.delete(id));
    }

    /// Sessions the cache forgot to stay within `max_detached`: their rows
    /// are deleted too.
    fn forget(&self, ids: Vec<String>) {
        for id in ids {
            self.metrics.evicted.inc();
            self.delete(&id);
        }
    }

    /// Whether the session's row waits to be deleted or is being deleted
    /// (it ended here).
    fn deleting(&self, id: &str) -> bool {
        self.pending.lock().deleting(id)
    }

    /// Detached sessions held.
    pub fn detached(&self) -> usize {
        self.cache.lock().detached()
    }

    fn upsert(&self, cached: &Cached) {
        let row = Row::of(&cached.record, cached.expires_at);
        self.queue(|p| p.upsert(&cached.record.id, row));
    }

    /// Changes not yet in the database (queued, or being written now).
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Writes up to one batch of pending changes in one transaction; on
    /// failure they stay pending (unless newer changes replaced them).
    ///
    /// # Errors
    /// The database is down or the write failed.
    pub async fn flush_once(&self) -> Result<usize, crate::db::DbError> {
        let batch = self.pending.lock().take(FLUSH_BATCH);
        let n = batch.len();
        if n == 0 {
            return Ok(0);
        }
        let result = write_batch(&self.db, &batch).await;
        let mut pending = self.pending.lock();
        match result {
            Ok(()) => {
                pending.committed(&batch);
                self.metrics.written.inc_by(n as u64);
                self.metrics.pending.set(pending.len() as i64);
                Ok(n)
            }
            Err(e) => {
                let dropped = pending.failed(batch);
                self.metrics.dropped.inc_by(dropped as u64);
                self.metrics.pending.set(pending.len() as i64);
                Err(e)
            }
        }
    }

    /// Flushes until nothing is pending or a write fails.
    ///
    /// # Errors
    /// The first failed write.
    pub async fn flush_all(&self) -> Result<usize, crate::db::DbError> {
        let mut total = 0;
        loop {
            let n = self.flush_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Loads unexpired sessions from the database into the cache, as many as
    /// `max_detached` leaves room for, those that expire last first: the
    /// ones attached when their process stopped (they count as detached
    /// from now), then the detached by expiry. Sessions changed in memory
    /// meanwhile win. The rows left out are left alone (they may be another
    /// node's; a `resume` still adopts one, [`SessionStore::fetch`]).
    ///
    /// # Errors
    /// The database is down.
    pub async fn warm(&self) -> Result<usize, crate::db::DbError> {
        use crate::db::schema::sessions::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let limit = i64::try_from(self.cache.lock().room()).unwrap_or(i64::MAX);
        let ttl = self.ttl_ms();
        // A read that a committed delete overlapped is read again, a few
        // times; past that a `resume` adopts what is left out, one by one.
        for _ in 0..3 {
            let generation = self.pending.lock().generation();
            let now = now_unix_ms();
            let rows: Vec<Row> = crate::with_conn!(self.db, |conn| {
                let mut rows: Vec<Row> = dsl::sessions
                    .filter(dsl::expires_at.is_null())
                    .order(dsl::last_seen.desc())
                    .limit(limit)
                    .select(Row::as_select())
                    .load(conn)
                    .await?;
                let rest = limit.saturating_sub(rows.len() as i64);
                if rest > 0 {
                    rows.extend(
                        dsl::sessions
                            .filter(dsl::expires_at.gt(now))
                            .order(dsl::expires_at.desc())
                            .limit(rest)
                            .select(Row::as_select())
                            .load::<Row>(conn)
                            .await?,
                    );
                }
                rows
            });
            let mut cache = self.cache.lock();
            let pending = self.pending.lock();
            if pending.generation() != generation {
                continue; // a delete committed during the read: its row may be here
            }
            let mut loaded = 0;
            for row in rows {
                if cache.room() == 0 {
                    break;
                }
                // Held already, or ended here (removed, forgotten) while its
                // row waits to be deleted: not to be loaded again.
                if cache.contains(&row.id) || pending.deleting(&row.id) {
                    continue;
                }
                let forgotten = cache.insert(Cached::from_row(&row, now, ttl));
                debug_assert!(forgotten.is_empty(), "inserted only where there is room");
                loaded += 1;
            }
            self.warmed.store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(loaded);
        }
        self.warmed.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(0)
    }

    /// One session from the database into the cache (unless the cache got it
    /// meanwhile); `None` when it is not there, has expired or ended here.
    async fn load_one(&self, id: String) -> Result<Option<SessionRecord>, crate::db::DbError> {
        use crate::db::schema::sessions::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let ttl = self.ttl_ms();
        // A read that a committed delete overlapped is read again, a few times.
        for _ in 0..3 {
            let generation = self.pending.lock().generation();
            let now = now_unix_ms();
            let row: Option<Row> = crate::with_conn!(self.db, |conn| {
                dsl::sessions
                    .filter(dsl::id.eq(&id))
                    .filter(dsl::expires_at.is_null().or(dsl::expires_at.gt(now)))
                    .select(Row::as_select())
                    .first(conn)
                    .await
                    .optional()?
            });
            let Some(row) = row else {
                return Ok(None);
            };
            let mut cache = self.cache.lock();
            let pending = self.pending.lock();
            if pending.generation() != generation {
                continue;
            }
            if pending.deleting(&row.id) {
                return Ok(None); // ended here while it was read
            }
            drop(pending);
            // Under the cache's lock no delete of it can be queued now.
            if !cache.contains(&row.id) {
                let forgotten = cache.insert(Cached::from_row(&row, now, ttl));
                self.forget(forgotten); // under the lock: no fetch adopts them meanwhile
            }
            return Ok(cache
                .get(&row.id)
                .filter(|c| c.expires_at.is_none_or(|at| at > now_unix_ms()))
                .map(|c| c.record.clone()));
        }
        Ok(None)
    }

    /// `session.ttl` in milliseconds.
    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Deletes expired sessions from the cache and the database.
    ///
    /// # Errors
    /// The database is down (the cache is purged anyway).
    pub async fn expire(&self) -> Result<usize, crate::db::DbError> {
        use crate::db::schema::sessions::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let purged = self.purge_expired();
        let now = now_unix_ms();
        let deleted = crate::with_conn!(self.db, |conn| {
            diesel::delete(dsl::sessions.filter(dsl::expires_at.lt(now)))
                .execute(conn)
                .await?
        });
        Ok(purged.max(deleted))
    }
}

async fn write_batch(db: &crate::db::Db, batch: &Batch) -> Result<(), crate::db::DbError> {
    use crate::db::schema::sessions::dsl;
    use diesel::prelude::*;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    match db.pool() {
        crate::db::Pool::Postgres(pool) => {
            let (upserts, deletes) = (&batch.upserts, &batch.deletes);
            let mut conn = db.checkout(pool.get()).await?;
            conn.transaction(async |conn| {
                for rows in upserts.chunks(upsert::ROWS) {
                    Upsert(rows).execute(conn).await?;
                }
                if !deletes.is_empty() {
                    diesel::delete(dsl::sessions.filter(dsl::id.eq_any(deletes)))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, crate::db::DbError>(())
            })
            .await?;
        }
        crate::db::Pool::Sqlite(pool) => {
            // The whole batch in one call on the blocking pool (a call per
            // statement would be a thread hand-off per statement).
            let batch = batch.clone();
            let mut conn = db.checkout(pool.get()).await?;
            conn.spawn_blocking(move |conn| write_batch_sqlite(conn, &batch))
                .await?;
        }
    }
    Ok(())
}

fn write_batch_sqlite(
    conn: &mut diesel::SqliteConnection,
    batch: &Batch,
) -> diesel::QueryResult<()> {
    use crate::db::schema::sessions::dsl;
    use diesel::prelude::*;
    conn.transaction(|conn| {
        for rows in batch.upserts.chunks(upsert::ROWS) {
            Upsert(rows).execute(conn)?;
        }
        if !batch.deletes.is_empty() {
            diesel::delete(dsl::sessions.filter(dsl::id.eq_any(&batch.deletes))).execute(conn)?;
        }
        Ok(())
    })
}

impl SessionStore for PersistentSessions {
    fn create(&self, id: &str, user: &str) {
        let now = SystemTime::now();
        let cached = Cached {
            record: SessionRecord {
                id: id.to_owned(),
                user: user.to_owned(),
                rooms: BTreeMap::new(),
                created: now,
                last_seen: now,
            },
            expires_at: None,
        };
        self.upsert(&cached);
        let mut cache = self.cache.lock();
        let forgotten = cache.insert(cached);
        self.forget(forgotten); // under the lock: no fetch adopts them meanwhile
    }

    fn fetch(self: Arc<Self>, id: String) -> BoxFuture<'static, Option<SessionRecord>> {
        Box::pin(async move {
            if let Some(record) = self.get(&id) {
                return Some(record);
            }
            if self.deleting(&id) {
                // Ended here, its row not deleted yet: not to be adopted.
                return None;
            }
            if !self.db.is_up() {
                return None; // fail open: as if unknown, never a wait on a dead database
            }
            self.load_one(id).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "session not read from the database; resuming as a new session");
                None
            })
        })
    }

    fn get(&self, id: &str) -> Option<SessionRecord> {
        let cache = self.cache.lock();
        let c = cache.get(id)?;
        c.expires_at
            .is_none_or(|at| at > now_unix_ms())
            .then(|| c.record.clone())
    }

    fn attach(&self, id: &str) -> Option<SessionRecord> {
        let mut cache = self.cache.lock();
        let now = now_unix_ms();
        if cache.get(id)?.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let (record, forgotten) = cache.update(id, |c| {
            c.expires_at = None;
            c.record.last_seen = SystemTime::now();
            self.upsert(c);
            c.record.clone()
        })?;
        debug_assert!(forgotten.is_empty(), "attaching forgets nothing");
        Some(record)
    }

    fn detach(&self, id: &str, rooms: BTreeMap<String, u64>) {
        let expires_at = now_unix_ms().saturating_add(self.ttl_ms());
        let mut cache = self.cache.lock();
        let changed = cache.update(id, |c| {
            c.expires_at = Some(expires_at);
            c.record.last_seen = SystemTime::now();
            c.record.rooms = rooms;
            self.upsert(c);
        });
        if let Some(((), forgotten)) = changed {
            self.forget(forgotten); // under the lock: no fetch adopts them meanwhile
        }
    }

    fn remove(&self, id: &str) {
        if self.cache.lock().remove(id).is_some() {
            self.delete(id);
        }
    }

    fn purge_expired(&self) -> usize {
        self.cache.lock().purge(now_unix_ms())
    }

    fn len(&self) -> usize {
        self.cache.lock().len()
    }
}
