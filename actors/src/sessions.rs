//! Client sessions: the registry behind `resume`, and the `sessions` actor
//! that persists it.
//!
//! A session (id, user, rooms with the last offset delivered, times) stays
//! valid for `ttl` after its socket closes. The transport talks to the
//! registry only through [`SessionStore`]. [`MemorySessions`] keeps sessions
//! in memory only; [`PersistentSessions`] keeps them in memory and writes them
//! behind to the database, so they survive restarts.
//!
//! The `sessions` actor owns the write-behind: every `flush_interval` it
//! writes the pending changes in one transaction, so a publish or a connect
//! never waits on the database. Fail-open: with the database down, sessions
//! keep working from memory and pending writes are kept (at most
//! `max_pending`; past that the oldest are dropped and counted) and flushed
//! when it returns. A `resume` of a session the cache does not hold reads
//! it from the database ([`SessionStore::fetch`]), so a session created on
//! another node sharing the database is adopted. At shutdown (stage `core`, after the connections closed)
//! it flushes what is pending and checkpoints every room's epoch and offset,
//! so that offsets continue after a graceful restart; after a crash the rooms
//! start new epochs instead, so an offset never repeats within an epoch.
//! Restart policy: permanent, non-critical. Lost on a crash: nothing; the
//! cache and the pending writes live in [`PersistentSessions`], outside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::{from_unix_ms, now_unix_ms, unix_ms};
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// One session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session id the client resumes with.
    pub id: String,
    /// Its user.
    pub user: String,
    /// Rooms with the last offset delivered to the client.
    pub rooms: BTreeMap<String, u64>,
    /// When it was created.
    pub created: SystemTime,
    /// When its socket was last seen open.
    pub last_seen: SystemTime,
}

/// Where sessions live. Calls must not block: a store backed by a database
/// answers from memory and writes behind.
pub trait SessionStore: Send + Sync + 'static {
    /// Records a new, attached session.
    fn create(&self, id: &str, user: &str);
    /// The session, if it exists and has not expired.
    fn get(&self, id: &str) -> Option<SessionRecord>;
    /// [`get`](Self::get), and on a miss, a read of the backing store where
    /// there is one: a session that another node created, or that this node
    /// has not loaded yet. The only call that may wait on the database.
    fn fetch(self: Arc<Self>, id: String) -> BoxFuture<'static, Option<SessionRecord>> {
        Box::pin(std::future::ready(self.get(&id)))
    }
    /// Marks the session attached to a live socket (it does not expire while attached).
    fn attach(&self, id: &str);
    /// Marks the session detached with its rooms; it expires `ttl` from now.
    fn detach(&self, id: &str, rooms: BTreeMap<String, u64>);
    /// Forgets a session at once (a connection that resumed another one).
    fn remove(&self, id: &str);
    /// Forgets sessions detached longer than the ttl; answers how many.
    fn purge_expired(&self) -> usize;
    /// Sessions held (attached and detached).
    fn len(&self) -> usize;
    /// Whether no session is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session and when it was detached (`None` while attached).
struct Held {
    record: SessionRecord,
    detached: Option<Instant>,
}

/// The in-memory [`SessionStore`].
pub struct MemorySessions {
    ttl: Duration,
    held: Mutex<HashMap<String, Held>>,
}

impl MemorySessions {
    /// A store whose detached sessions live `ttl`.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            ttl,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn expired(&self, held: &Held, now: Instant) -> bool {
        held.detached
            .is_some_and(|at| now.duration_since(at) > self.ttl)
    }
}

impl SessionStore for MemorySessions {
    fn create(&self, id: &str, user: &str) {
        let now = SystemTime::now();
        let record = SessionRecord {
            id: id.to_owned(),
            user: user.to_owned(),
            rooms: BTreeMap::new(),
            created: now,
            last_seen: now,
        };
        self.held.lock().insert(
            id.to_owned(),
            Held {
                record,
                detached: None,
            },
        );
    }

    fn get(&self, id: &str) -> Option<SessionRecord> {
        let held = self.held.lock();
        let h = held.get(id)?;
        (!self.expired(h, Instant::now())).then(|| h.record.clone())
    }

    fn attach(&self, id: &str) {
        if let Some(h) = self.held.lock().get_mut(id) {
            h.detached = None;
            h.record.last_seen = SystemTime::now();
        }
    }

    fn detach(&self, id: &str, rooms: BTreeMap<String, u64>) {
        if let Some(h) = self.held.lock().get_mut(id) {
            h.detached = Some(Instant::now());
            h.record.last_seen = SystemTime::now();
            h.record.rooms = rooms;
        }
    }

    fn remove(&self, id: &str) {
        self.held.lock().remove(id);
    }

    fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut held = self.held.lock();
        let before = held.len();
        held.retain(|_, h| !self.expired(h, now));
        before - held.len()
    }

    fn len(&self) -> usize {
        self.held.lock().len()
    }
}

/// A `sessions` row.
#[derive(
    Clone, Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = crate::db::schema::sessions, treat_none_as_default_value = false)]
struct Row {
    id: String,
    user_id: String,
    rooms: String,
    created_at: i64,
    last_seen: i64,
    expires_at: Option<i64>,
}

impl Row {
    fn of(record: &SessionRecord, expires_at: Option<i64>) -> Self {
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

/// A change waiting to be written.
#[derive(Clone, Debug)]
enum Write {
    Upsert(Row),
    Delete,
}

/// A cached session and when it expires (Unix ms; `None` while attached).
struct Cached {
    record: SessionRecord,
    expires_at: Option<i64>,
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
    ttl: Duration,
    db: crate::db::Db,
    cache: Mutex<HashMap<String, Cached>>,
    /// The latest change per session, oldest first by insertion.
    pending: Mutex<indexmap::IndexMap<String, Write>>,
    /// Bound on `pending`.
    max_pending: usize,
    /// Set once the sessions in the database were loaded into the cache.
    warmed: std::sync::atomic::AtomicBool,
    /// Changes taken out of `pending` by a flush still writing them.
    in_flight: std::sync::atomic::AtomicUsize,
    metrics: SessionMetrics,
}

struct SessionMetrics {
    pending: prometheus::IntGauge,
    written: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
}

/// Most changes written in one transaction.
const FLUSH_BATCH: usize = 500;

impl PersistentSessions {
    /// A store writing behind to `db`.
    ///
    /// # Errors
    /// Its metrics are registered already.
    pub fn new(
        ttl: Duration,
        max_pending: usize,
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
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(written.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        Ok(Arc::new(Self {
            ttl,
            db,
            cache: Mutex::new(HashMap::new()),
            pending: Mutex::new(indexmap::IndexMap::new()),
            max_pending: max_pending.max(1),
            warmed: std::sync::atomic::AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            metrics: SessionMetrics {
                pending,
                written,
                dropped,
            },
        }))
    }

    fn queue(&self, id: &str, write: Write) {
        let mut pending = self.pending.lock();
        pending.shift_remove(id);
        if pending.len() >= self.max_pending {
            pending.shift_remove_index(0);
            self.metrics.dropped.inc();
        }
        pending.insert(id.to_owned(), write);
        self.metrics.pending.set(pending.len() as i64);
    }

    fn upsert(&self, cached: &Cached) {
        self.queue(
            &cached.record.id,
            Write::Upsert(Row::of(&cached.record, cached.expires_at)),
        );
    }

    /// Changes not yet in the database (queued, or being written now).
    pub fn pending(&self) -> usize {
        self.pending.lock().len() + self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes up to one batch of pending changes in one transaction; on
    /// failure they stay pending (unless newer changes replaced them).
    ///
    /// # Errors
    /// The database is down or the write failed.
    pub async fn flush_once(&self) -> Result<usize, crate::db::DbError> {
        let batch: Vec<(String, Write)> = {
            let mut pending = self.pending.lock();
            let n = pending.len().min(FLUSH_BATCH);
            pending.drain(..n).collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        self.in_flight
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        let result = write_batch(&self.db, batch.clone()).await;
        self.in_flight
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        match result {
            Ok(()) => {
                self.metrics.written.inc_by(n as u64);
                self.metrics.pending.set(self.pending() as i64);
                Ok(n)
            }
            Err(e) => {
                let mut pending = self.pending.lock();
                let mut restored = indexmap::IndexMap::with_capacity(batch.len() + pending.len());
                for (id, w) in batch {
                    if !pending.contains_key(&id) {
                        restored.insert(id, w);
                    }
                }
                restored.extend(pending.drain(..));
                while restored.len() > self.max_pending {
                    restored.shift_remove_index(0);
                    self.metrics.dropped.inc();
                }
                *pending = restored;
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

    /// Loads every unexpired session from the database into the cache
    /// (sessions changed in memory meanwhile win). Sessions that were
    /// attached when the process stopped count as detached from now.
    ///
    /// # Errors
    /// The database is down.
    pub async fn warm(&self) -> Result<usize, crate::db::DbError> {
        use crate::db::schema::sessions::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let now = now_unix_ms();
        let rows: Vec<Row> = crate::with_conn!(self.db, |conn| {
            dsl::sessions
                .filter(dsl::expires_at.is_null().or(dsl::expires_at.gt(now)))
                .select(Row::as_select())
                .load(conn)
                .await?
        });
        let ttl = self.ttl_ms();
        let mut cache = self.cache.lock();
        let mut loaded = 0;
        for row in rows {
            if cache.contains_key(&row.id) {
                continue;
            }
            cache.insert(row.id.clone(), Cached::from_row(&row, now, ttl));
            loaded += 1;
        }
        self.warmed.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(loaded)
    }

    /// One session from the database into the cache (unless the cache got it
    /// meanwhile); `None` when it is not there or has expired.
    async fn load_one(&self, id: String) -> Result<Option<SessionRecord>, crate::db::DbError> {
        use crate::db::schema::sessions::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
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
        let ttl = self.ttl_ms();
        let mut cache = self.cache.lock();
        let cached = cache
            .entry(row.id.clone())
            .or_insert_with(|| Cached::from_row(&row, now, ttl));
        Ok(Some(cached.record.clone()))
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

async fn write_batch(
    db: &crate::db::Db,
    batch: Vec<(String, Write)>,
) -> Result<(), crate::db::DbError> {
    use crate::db::schema::sessions::dsl;
    use diesel::prelude::*;
    use diesel::upsert::excluded;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (id, w) in batch {
        match w {
            Write::Upsert(row) => upserts.push(row),
            Write::Delete => deletes.push(id),
        }
    }
    // The same upsert for both backends; PostgreSQL takes it 100 rows per
    // statement, SQLite (which cannot batch an upsert) one row per statement.
    macro_rules! upsert {
        ($rows:expr) => {
            diesel::insert_into(dsl::sessions)
                .values($rows)
                .on_conflict(dsl::id)
                .do_update()
                .set((
                    dsl::user_id.eq(excluded(dsl::user_id)),
                    dsl::rooms.eq(excluded(dsl::rooms)),
                    dsl::last_seen.eq(excluded(dsl::last_seen)),
                    dsl::expires_at.eq(excluded(dsl::expires_at)),
                ))
        };
    }
    match db.pool() {
        crate::db::Pool::Postgres(pool) => {
            let mut conn = db.checkout(pool.get()).await?;
            conn.transaction(async |conn| {
                for chunk in upserts.chunks(100) {
                    upsert!(chunk).execute(conn).await?;
                }
                if !deletes.is_empty() {
                    diesel::delete(dsl::sessions.filter(dsl::id.eq_any(&deletes)))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, crate::db::DbError>(())
            })
            .await?;
        }
        crate::db::Pool::Sqlite(pool) => {
            let mut conn = db.checkout(pool.get()).await?;
            conn.transaction(async |conn| {
                for row in &upserts {
                    upsert!(row).execute(conn).await?;
                }
                if !deletes.is_empty() {
                    diesel::delete(dsl::sessions.filter(dsl::id.eq_any(&deletes)))
                        .execute(conn)
                        .await?;
                }
                Ok::<_, crate::db::DbError>(())
            })
            .await?;
        }
    }
    Ok(())
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
        self.cache.lock().insert(id.to_owned(), cached);
    }

    fn fetch(self: Arc<Self>, id: String) -> BoxFuture<'static, Option<SessionRecord>> {
        Box::pin(async move {
            if let Some(record) = self.get(&id) {
                return Some(record);
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

    fn attach(&self, id: &str) {
        let mut cache = self.cache.lock();
        if let Some(c) = cache.get_mut(id) {
            c.expires_at = None;
            c.record.last_seen = SystemTime::now();
            self.upsert(c);
        }
    }

    fn detach(&self, id: &str, rooms: BTreeMap<String, u64>) {
        let ttl = self.ttl_ms();
        let mut cache = self.cache.lock();
        if let Some(c) = cache.get_mut(id) {
            c.expires_at = Some(now_unix_ms().saturating_add(ttl));
            c.record.last_seen = SystemTime::now();
            c.record.rooms = rooms;
            self.upsert(c);
        }
    }

    fn remove(&self, id: &str) {
        if self.cache.lock().remove(id).is_some() {
            self.queue(id, Write::Delete);
        }
    }

    fn purge_expired(&self) -> usize {
        let now = now_unix_ms();
        let mut cache = self.cache.lock();
        let before = cache.len();
        cache.retain(|_, c| c.expires_at.is_none_or(|at| at > now));
        before - cache.len()
    }

    fn len(&self) -> usize {
        self.cache.lock().len()
    }
}

/// A room's epoch and latest offset, as checkpointed.
#[derive(
    Clone, Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = crate::db::schema::rooms, treat_none_as_default_value = false)]
pub struct RoomRow {
    /// The room.
    pub name: String,
    /// Its epoch.
    pub epoch: String,
    /// Its latest offset.
    pub last_offset: i64,
    /// Written by a graceful shutdown.
    pub clean: bool,
    /// When, Unix ms.
    pub updated_at: i64,
}

/// Loads the rooms a graceful shutdown checkpointed, and marks every row
/// unclean: should this process crash, they must not be trusted again.
///
/// # Errors
/// The database is down.
pub async fn load_room_checkpoint(db: &crate::db::Db) -> Result<Vec<RoomRow>, crate::db::DbError> {
    use crate::db::schema::rooms::dsl;
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let rows = crate::with_conn!(db, |conn| {
        let rows: Vec<RoomRow> = dsl::rooms
            .filter(dsl::clean.eq(true))
            .select(RoomRow::as_select())
            .load(conn)
            .await?;
        diesel::update(dsl::rooms)
            .set(dsl::clean.eq(false))
            .execute(conn)
            .await?;
        rows
    });
    Ok(rows)
}

/// Writes every room's epoch and latest offset, marked clean.
///
/// # Errors
/// The database is down.
pub async fn save_room_checkpoint(
    db: &crate::db::Db,
    rows: Vec<RoomRow>,
) -> Result<usize, crate::db::DbError> {
    use crate::db::schema::rooms::dsl;
    use diesel::prelude::*;
    use diesel::upsert::excluded;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let n = rows.len();
    crate::with_conn!(db, |conn| {
        let rows = rows.clone();
        conn.transaction(async |conn| {
            for row in &rows {
                diesel::insert_into(dsl::rooms)
                    .values(row)
                    .on_conflict(dsl::name)
                    .do_update()
                    .set((
                        dsl::epoch.eq(excluded(dsl::epoch)),
                        dsl::last_offset.eq(excluded(dsl::last_offset)),
                        dsl::clean.eq(excluded(dsl::clean)),
                        dsl::updated_at.eq(excluded(dsl::updated_at)),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok::<_, crate::db::DbError>(())
        })
        .await?;
    });
    Ok(n)
}

/// The `sessions` actor. See the module docs.
pub struct SessionsActor {
    store: Arc<PersistentSessions>,
    rooms: crate::rooms::Rooms,
    flush_interval: Duration,
    /// A flush is in flight; ticks meanwhile are skipped.
    flushing: bool,
    /// The last write failure, for health.
    last_error: Option<String>,
}

impl SessionsActor {
    /// The actor's spec: permanent, non-critical, stage `core`.
    pub fn spec(
        store: Arc<PersistentSessions>,
        rooms: crate::rooms::Rooms,
        flush_interval: Duration,
        shutdown_timeout: Duration,
    ) -> crate::supervision::ChildSpec<SessionsActor> {
        crate::supervision::ChildSpec::new("sessions", move |_| SessionsActor {
            store: store.clone(),
            rooms: rooms.clone(),
            flush_interval,
            flushing: false,
            last_error: None,
        })
        .critical(false)
        .stage(crate::shutdown::Stage::Core)
        .shutdown_timeout(shutdown_timeout)
    }

    fn tick(&mut self, ctx: &mut actix::Context<Self>) {
        use actix::prelude::*;
        if self.flushing || !self.store.db.is_up() {
            return;
        }
        let store = self.store.clone();
        self.flushing = true;
        ctx.spawn(
            async move {
                if !store.warmed.load(std::sync::atomic::Ordering::SeqCst) {
                    store.warm().await?;
                }
                store.flush_all().await
            }
            .into_actor(self)
            .map(|result, act, _| {
                act.flushing = false;
                match result {
                    Ok(_) => act.last_error = None,
                    Err(e) => {
                        tracing::warn!(error = %e, pending = act.store.pending(), "session write-behind failed; kept pending");
                        act.last_error = Some(e.to_string());
                    }
                }
            }),
        );
    }
}

impl actix::Actor for SessionsActor {
    type Context = actix::Context<Self>;

    /// Flushes every `flush_interval`. Cannot fail.
    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::AsyncContext;
        ctx.run_interval(self.flush_interval, |act, ctx| act.tick(ctx));
    }
}

impl crate::supervision::Child for SessionsActor {
    fn health(&mut self, _ctx: &mut actix::Context<Self>) -> crate::health::HealthReply<Self> {
        let pending = self.store.pending();
        let mut h = crate::health::Health::healthy();
        if pending > 0 && !self.store.db.is_up() {
            h = crate::health::Health::degraded("database down; session writes pending");
        }
        if let Some(e) = &self.last_error {
            h = h.with("last_error", e.clone());
        }
        h.with("sessions", self.store.len())
            .with("pending_writes", pending)
            .with("dropped_writes", self.store.metrics.dropped.get())
            .into()
    }

    /// Flushes what is pending and checkpoints the rooms, then stops.
    fn shutdown(&mut self, ctx: &mut actix::Context<Self>) {
        use actix::prelude::*;
        let store = self.store.clone();
        let rows: Vec<RoomRow> = self
            .rooms
            .checkpoint()
            .into_iter()
            .map(|(name, epoch, offset)| RoomRow {
                name,
                epoch,
                last_offset: i64::try_from(offset).unwrap_or(i64::MAX),
                clean: true,
                updated_at: now_unix_ms(),
            })
            .collect();
        ctx.spawn(
            async move {
                match store.flush_all().await {
                    Ok(n) => tracing::info!(written = n, "sessions flushed"),
                    Err(e) => tracing::error!(error = %e, pending = store.pending(), "sessions not flushed at shutdown"),
                }
                match save_room_checkpoint(&store.db, rows).await {
                    Ok(n) => tracing::info!(rooms = n, "room offsets checkpointed"),
                    Err(e) => tracing::error!(error = %e, "room checkpoint failed; rooms will start new epochs"),
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_session_lives_its_ttl_then_expires() {
        let store = MemorySessions::new(Duration::from_millis(30));
        store.create("s1", "u1");
        store.detach("s1", BTreeMap::from([("lobby".to_owned(), 7)]));
        let got = store.get("s1").unwrap();
        assert_eq!((got.user.as_str(), got.rooms["lobby"]), ("u1", 7));
        std::thread::sleep(Duration::from_millis(40)); // the ttl itself is what is under test
        assert!(store.get("s1").is_none());
        assert_eq!(store.purge_expired(), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn an_attached_session_never_expires() {
        let store = MemorySessions::new(Duration::ZERO);
        store.create("s1", "u1");
        assert!(store.get("s1").is_some());
        assert_eq!(store.purge_expired(), 0);
    }
}
