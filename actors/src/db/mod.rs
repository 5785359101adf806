//! The `db` actor: the database connection pool, its health, and its outages.
//!
//! Owns: the probe loop and the pool-saturation watch. The pool itself lives
//! in [`Db`], a handle every subsystem shares, outside the actor: a restart
//! of the actor loses nothing.
//! Backends: SQLite (the embedded default, `sqlite://data/holdfast.db`, WAL,
//! created on first start) through diesel's `SqliteConnection` behind
//! diesel-async's `SyncConnectionWrapper` (its calls run by
//! `blocking::Blocking`; a connection whose call was dropped mid-flight is
//! discarded, never waited for: `sqlite`), and PostgreSQL
//! (`postgres://...`) through `AsyncPgConnection` (tokio-postgres, no
//! libpq); both pooled by bb8.
//! Outages: at start the first probe is retried with exponential back-off and
//! full jitter (`database.connect_retries` tries); after that the server
//! starts anyway, degraded, and the actor keeps probing every
//! `database.probe_interval_ms`. bb8 re-establishes connections by itself, so
//! when the database comes back it is used again without a restart; pending
//! migrations run on the first successful probe.
//! Health: `SELECT 1` round-trip latency and pool figures (size, idle, in
//! use, waiters, max, usage %). Unhealthy while the database is unreachable:
//! the node is then `degraded`, or `unhealthy` and not ready when the spec
//! says the database is critical (`database.critical`).
//! Saturation: usage at or above 80 % for three probes in a row publishes
//! `db.pool_saturated` (logged, counted); below 70 % again, `db.pool_recovered`.
//! Restart policy: permanent, stage `storage`.

mod blocking;
pub mod schema;
mod settings;
mod sqlite;

pub use blocking::Blocking;
pub use settings::{DbSettings, DbUrl};
pub use sqlite::{SqliteConn, SqliteManager, SqliteWrapper};

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel::Connection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::json;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::clock::now_rfc3339;
use crate::events::{Event, Events};
use crate::health::{Health, HealthReply};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// Migrations for SQLite, embedded in the binary.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
/// Migrations for PostgreSQL, embedded in the binary.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Usage at or above this is saturated (after `SATURATION_SAMPLES` probes).
const SATURATED_AT: f64 = 0.8;
/// Usage below this after saturation is recovered.
const RECOVERED_BELOW: f64 = 0.7;
/// Consecutive probes at or above `SATURATED_AT` before `db.pool_saturated`.
const SATURATION_SAMPLES: u32 = 3;
/// How often the pool usage is sampled.
const USAGE_INTERVAL: Duration = Duration::from_secs(1);

/// The SQLite pool.
pub type SqlitePool = bb8::Pool<SqliteManager>;
/// The PostgreSQL pool.
pub type PgPool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;

/// A pool of either backend.
#[derive(Clone)]
pub enum Pool {
    /// The embedded default.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Which backend a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path`
    Sqlite,
    /// `postgres://...` or `postgresql://...`
    Postgres,
}

impl Backend {
    /// The backend of `url`, if Holdfast supports it.
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite://") || url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever
/// backend the pool has; the body is type-checked once per backend.
#[macro_export]
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {{
        match $db.pool() {
            $crate::db::Pool::Sqlite(pool) => {
                let mut guard = $db.checkout(pool.get()).await?;
                let $conn = &mut **guard;
                $body
            }
            $crate::db::Pool::Postgres(pool) => {
                let mut guard = $db.checkout(pool.get()).await?;
                let $conn = &mut *guard;
                $body
            }
        }
    }};
}

/// What can go wrong talking to the database. Messages never carry secrets.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (database down, pool timed out).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migration(String),
}

/// The database's metrics.
struct DbMetrics {
    pool: IntGauge,
    idle: IntGauge,
    in_use: IntGauge,
    waiters: IntGauge,
    up: IntGauge,
    saturation: IntCounterVec,
    probe: Histogram,
}

impl DbMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let saturation = IntCounterVec::new(
            Opts::new(
                "holdfast_db_pool_saturation_events_total",
                "Pool saturation events (saturated, recovered).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(saturation.clone()))?;
        let probe = Histogram::with_opts(
            HistogramOpts::new(
                "holdfast_db_probe_duration_seconds",
                "Round trip of the database probe (SELECT 1).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
        )?;
        registry.register(Box::new(probe.clone()))?;
        Ok(Self {
            pool: gauge(
                "holdfast_db_pool_connections",
                "Connections held by the pool.",
            )?,
            idle: gauge(
                "holdfast_db_pool_idle_connections",
                "Idle connections in the pool.",
            )?,
            in_use: gauge(
                "holdfast_db_pool_in_use_connections",
                "Connections checked out of the pool.",
            )?,
            waiters: gauge(
                "holdfast_db_pool_waiters",
                "Callers waiting for a connection.",
            )?,
            up: gauge(
                "holdfast_db_up",
                "1 when the last database probe succeeded.",
            )?,
            saturation,
            probe,
        })
    }
}

/// The shared database handle. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    settings: DbSettings,
    backend: Backend,
    pool: Pool,
    /// Whether the last probe succeeded.
    up: AtomicBool,
    /// Whether migrations have run in this process.
    migrated: AtomicBool,
    /// Callers inside `get` right now.
    waiters: AtomicI64,
    /// The last failure, for health (no secrets).
    last_error: Mutex<Option<(String, String)>>,
    metrics: DbMetrics,
    events: Events,
    /// Resolves when the start-up probes are over (up, or given up on).
    started: tokio::sync::watch::Sender<bool>,
}

impl Db {
    /// A handle with a pool for `settings.url`. Connects lazily: nothing is
    /// dialled until the first probe.
    ///
    /// # Errors
    /// An unsupported URL, or metrics already registered.
    pub fn new(settings: DbSettings, registry: &Registry, events: Events) -> Result<Self, String> {
        let backend = Backend::of(settings.url.expose())
            .ok_or_else(|| "database.url must start with sqlite:// or postgres://".to_owned())?;
        let metrics = DbMetrics::new(registry).map_err(|e| e.to_string())?;
        let pool = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(settings.url.expose()).to_owned();
                if let Some(dir) = std::path::Path::new(&path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        format!("cannot create the SQLite directory {}: {e}", dir.display())
                    })?;
                }
                let manager = SqliteManager::new(&path);
                Pool::Sqlite(builder(&settings).build_unchecked(manager))
            }
            Backend::Postgres => {
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new(settings.url.expose());
                Pool::Postgres(builder(&settings).build_unchecked(manager))
            }
        };
        let (started, _) = tokio::sync::watch::channel(false);
        Ok(Self {
            inner: Arc::new(DbInner {
                settings,
                backend,
                pool,
                up: AtomicBool::new(false),
                migrated: AtomicBool::new(false),
                waiters: AtomicI64::new(0),
                last_error: Mutex::new(None),
                metrics,
                events,
                started,
            }),
        })
    }

    /// The pool.
    pub fn pool(&self) -> Pool {
        self.inner.pool.clone()
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Whether the last probe succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Awaits a pool checkout (`pool.get()`), counting the wait.
    ///
    /// # Errors
    /// `Unavailable` when no connection can be had within the connection timeout.
    pub async fn checkout<T, E: std::fmt::Display>(
        &self,
        get: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, DbError> {
        self.inner.waiters.fetch_add(1, Ordering::Relaxed);
        let conn = get.await;
        self.inner.waiters.fetch_sub(1, Ordering::Relaxed);
        conn.map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Resolves once the start-up probes are over, the database up or not.
    pub async fn started(&self) {
        let mut rx = self.inner.started.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The URL with any password replaced, for health and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(self.inner.settings.url.expose())
    }

    /// One probe: `SELECT 1`, then pending migrations if they have not run.
    /// Updates `up`, the metrics and the last error; answers the latency.
    async fn probe(&self) -> Result<Duration, String> {
        let began = Instant::now();
        let timeout = Duration::from_millis(self.inner.settings.probe_timeout_ms);
        let result = tokio::time::timeout(timeout, self.select_one()).await;
        let result = match result {
            Ok(Ok(())) => Ok(began.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        match &result {
            Ok(took) => {
                self.inner.metrics.probe.observe(took.as_secs_f64());
                if self.inner.settings.migrate && !self.inner.migrated.load(Ordering::SeqCst) {
                    if let Err(e) = self.migrate().await {
                        error!(error = %e, "database migrations failed");
                        self.set_down(e.to_string());
                        return Err(e.to_string());
                    }
                }
                if !self.inner.up.swap(true, Ordering::SeqCst) {
                    info!(backend = self.inner.backend.as_str(), url = %self.redacted_url(), "database up");
                }
                self.inner.metrics.up.set(1);
            }
            Err(e) => self.set_down(e.clone()),
        }
        result
    }

    fn set_down(&self, error: String) {
        if self.inner.up.swap(false, Ordering::SeqCst) {
            warn!(url = %self.redacted_url(), error = %error, "database down; serving degraded and probing");
        }
        self.inner.metrics.up.set(0);
        *self.inner.last_error.lock() = Some((error, now_rfc3339()));
    }

    async fn select_one(&self) -> Result<(), DbError> {
        use diesel_async::RunQueryDsl;
        with_conn!(self, |conn| {
            diesel::select(1i32.into_sql::<diesel::sql_types::Integer>())
                .execute(conn)
                .await?;
        });
        Ok(())
    }

    /// Runs pending migrations on a thread of its own (diesel's migration
    /// harness is synchronous; actix's runtime is single-threaded).
    ///
    /// # Errors
    /// The connection or a migration failed.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let url = self.inner.settings.url.expose().to_owned();
        let backend = self.inner.backend;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("holdfast-migrate".into())
            .spawn(move || {
                let _ = tx.send(run_migrations(backend, &url));
            })
            .map_err(|e| DbError::Migration(e.to_string()))?;
        let applied = rx
            .await
            .map_err(|_| DbError::Migration("the migration thread died".into()))??;
        self.inner.migrated.store(true, Ordering::SeqCst);
        if applied > 0 {
            info!(applied, backend = backend.as_str(), "migrations applied");
        }
        Ok(applied)
    }

    /// The `db` actor's spec: permanent, stage `storage`.
    pub fn spec(&self) -> ChildSpec<DbActor> {
        let db = self.clone();
        ChildSpec::new("db", move |_| DbActor {
            db: db.clone(),
            saturated: false,
            hot_samples: 0,
        })
        .stage(Stage::Storage)
        .critical(self.inner.settings.critical)
    }

    fn usage(&self) -> (u32, u32, u32, i64, u32) {
        let state = match &self.inner.pool {
            Pool::Sqlite(p) => p.state(),
            Pool::Postgres(p) => p.state(),
        };
        let max = self.inner.settings.max_size;
        let in_use = state.connections.saturating_sub(state.idle_connections);
        (
            state.connections,
            state.idle_connections,
            in_use,
            self.inner.waiters.load(Ordering::Relaxed),
            max,
        )
    }
}

use diesel::IntoSql;

/// Applies pending migrations with a synchronous connection.
fn run_migrations(backend: Backend, url: &str) -> Result<usize, DbError> {
    let err = |e: &dyn std::fmt::Display| DbError::Migration(e.to_string());
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlite::open(sqlite_path(url)).map_err(|e| err(&e))?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len())
                .map_err(|e| err(&*e))
        }
        Backend::Postgres => {
            // No tokio runtime on this thread: the wrapper builds its own.
            let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                AsyncPgConnection,
            >::establish(url)
            .map_err(|e| err(&e))?;
            conn.run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len())
                .map_err(|e| err(&*e))
        }
    }
}

fn builder<M: bb8::ManageConnection>(s: &DbSettings) -> bb8::Builder<M> {
    bb8::Pool::builder()
        .max_size(s.max_size.max(1))
        .min_idle(Some(s.min_idle.min(s.max_size)))
        .connection_timeout(s.connection_timeout())
        .max_lifetime(Some(Duration::from_millis(s.max_lifetime_ms)))
        .idle_timeout(Some(Duration::from_millis(s.idle_timeout_ms)))
        .test_on_check_out(s.test_on_checkout)
        .retry_connection(false)
}

/// The file path of a `sqlite://` URL.
pub fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// A URL with what may be a secret replaced by `***`: the password of
/// its user info (which may itself hold `@`), a user info that is one
/// token with no password (`redis://token@host`; a PostgreSQL user name
/// stays), and the values of query parameters named like secrets
/// (`password`, `token`, `api_key`, ...).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&before_query[..at], &before_query[at + 1..]);
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@{host}")),
                None if matches!(scheme, "postgres" | "postgresql") => {
                    out.push_str(&format!("{userinfo}@{host}"));
                }
                None => out.push_str(&format!("***@{host}")),
            }
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// `query` with the values of parameters named like secrets as `***`.
fn redact_query(query: &str) -> String {
    const SECRET_NAMES: &[&str] = &["pass", "pwd", "secret", "token", "key", "auth", "signature"];
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_NAMES
                    .iter()
                    .any(|s| name.to_ascii_lowercase().contains(s)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// See the module docs.
pub struct DbActor {
    db: Db,
    /// Whether `db.pool_saturated` was published and `db.pool_recovered` not yet.
    saturated: bool,
    /// Consecutive usage samples at or above `SATURATED_AT`.
    hot_samples: u32,
}

impl DbActor {
    /// Start-up: probe with back-off and full jitter, then keep probing.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let fut = async move {
            let s = &db.inner.settings;
            for attempt in 1..=s.connect_retries.max(1) {
                match db.probe().await {
                    Ok(_) => return,
                    Err(e) => {
                        // 0..=min(retry_max, retry_base · 2^(attempt-1)).
                        let delay = Backoff::full_jitter(
                            Duration::from_millis(s.retry_base_ms) / 2,
                            Duration::from_millis(s.retry_max_ms),
                        )
                        .random_retry(attempt);
                        warn!(attempt, of = s.connect_retries, error = %e, retry_in_ms = delay.as_millis() as u64,
                            "database not reachable at start");
                        if attempt < s.connect_retries {
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
            }
            error!(url = %db.redacted_url(), "database still unreachable; starting degraded, probing in the background");
        };
        ctx.wait(fut.into_actor(self).map(|_, act, ctx| {
            act.db.inner.started.send_replace(true);
            act.keep_probing(ctx);
        }));
    }

    fn keep_probing(&mut self, ctx: &mut Context<Self>) {
        let every = Duration::from_millis(self.db.inner.settings.probe_interval_ms);
        ctx.run_interval(every, |act, ctx| {
            if !act.db.is_up() {
                let db = act.db.clone();
                ctx.spawn(
                    async move { db.probe().await.map(|_| ()).unwrap_or(()) }.into_actor(act),
                );
            }
        });
        ctx.run_interval(USAGE_INTERVAL, |act, _| act.sample_usage());
    }

    fn sample_usage(&mut self) {
        let (size, idle, in_use, waiters, max) = self.db.usage();
        let m = &self.db.inner.metrics;
        m.pool.set(i64::from(size));
        m.idle.set(i64::from(idle));
        m.in_use.set(i64::from(in_use));
        m.waiters.set(waiters);
        let usage = f64::from(in_use) / f64::from(max.max(1));
        if usage >= SATURATED_AT {
            self.hot_samples += 1;
        } else {
            self.hot_samples = 0;
        }
        let publish = |topic: &str, kind: &str| {
            m.saturation.with_label_values(&[kind]).inc();
            self.db.inner.events.publish(Event::Custom {
                topic: topic.to_owned(),
                data: json!({"in_use": in_use, "max": max, "waiters": waiters, "usage_pct": usage * 100.0}),
            });
        };
        if !self.saturated && self.hot_samples >= SATURATION_SAMPLES {
            self.saturated = true;
            warn!(in_use, max, waiters, "database pool saturated");
            publish("db.pool_saturated", "saturated");
        } else if self.saturated && usage < RECOVERED_BELOW {
            self.saturated = false;
            info!(in_use, max, "database pool recovered");
            publish("db.pool_recovered", "recovered");
        }
    }
}

impl Actor for DbActor {
    type Context = Context<Self>;

    /// Runs the start-up probes, then the background probe and usage watch.
    /// Cannot fail: an unreachable database is a degraded state, not an error.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if *self.db.inner.started.borrow() {
            self.keep_probing(ctx); // a restarted incarnation: start-up is long over
        } else {
            self.connect(ctx);
        }
    }
}

impl Child for DbActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let db = self.db.clone();
        let saturated = self.saturated;
        HealthReply::Pending(Box::pin(
            async move {
                let probe = db.probe().await;
                let (size, idle, in_use, waiters, max) = db.usage();
                let mut h = match probe {
                    Ok(took) => Health::healthy().with("latency_ms", took.as_secs_f64() * 1e3),
                    Err(e) => Health::unhealthy(format!("database unreachable: {e}")),
                };
                if let Some((error, at)) = db.inner.last_error.lock().clone() {
                    h = h.with("last_error", error).with("last_error_at", at);
                }
                h.with("backend", db.backend().as_str())
                    .with("url", db.redacted_url())
                    .with("pool", json!({"size": size, "idle": idle, "in_use": in_use, "waiters": waiters,
                        "max": max, "usage_pct": 100.0 * f64::from(in_use) / f64::from(max.max(1))}))
                    .with("saturated", saturated)
            }
            .into_actor(self),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    /// Issue 12 #9: the forms that showed a secret.
    #[test]
    fn secrets_in_queries_odd_passwords_and_token_users_are_redacted() {
        assert_eq!(
            redact_url("postgres://u@h/x?password=QueryPw99&sslmode=require"),
            "postgres://u@h/x?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/x"),
            "postgres://u:***@h:5432/x"
        );
        assert_eq!(
            redact_url("redis://tok3nOnlyUser@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        for url in [
            "postgres://u@h/x?password=QueryPw99",
            "postgres://u:p@ss@h/x",
            "redis://tok3nOnlyUser@host",
            "https://feed.example/x?api_key=K3y&token=T0k&page=2",
        ] {
            let shown = redact_url(url);
            for secret in ["QueryPw99", "p@ss", "ss@", "tok3nOnlyUser", "K3y", "T0k"] {
                assert!(!shown.contains(secret), "{url} shows {secret}: {shown}");
            }
        }
        assert!(redact_url("https://feed.example/x?page=2").ends_with("?page=2"));
    }

    #[test]
    fn backends_are_told_apart() {
        assert_eq!(Backend::of("sqlite://data/x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("postgresql://h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of("mysql://h/db"), None);
        assert_eq!(sqlite_path("sqlite://data/x.db"), "data/x.db");
    }
}
