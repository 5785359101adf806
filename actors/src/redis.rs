//! The `redis` actor and the [`Redis`] handle: the Redis link that
//! several `holdfast` nodes share.
//!
//! The handle owns the connection pool (bb8-redis), runs scripts with a
//! bounded round trip, and knows whether Redis answers (every command and a
//! PING each second say so). What the link carries is its users' concern:
//! the rooms' Redis broker (`rooms::broker::redis`) assigns offsets, keeps
//! history and relays publications over it; this module knows nothing of
//! rooms.
//!
//! **Redis down:** every user sees [`Redis::is_up`] false and falls back
//! on its own (rooms serve their local members on node-local epochs); health
//! is `degraded` (the actor is non-critical); everything goes back through
//! Redis as soon as it answers PING again.
//!
//! The actor owns the PING probe and one Pub/Sub subscription per
//! [`Subscriber`] it was given, each re-established with back-off when lost
//! (and the subscriber told, since it may have missed messages). Restart
//! policy: permanent, non-critical, stage `storage`. Lost on a crash: the
//! subscriptions, re-established by the next incarnation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;
use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::clock::now_rfc3339;
use crate::db::DbUrl;
use crate::health::{Health, HealthReply};
use crate::settings::{positive, SettingError};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// How often the actor PINGs Redis.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest wait before subscribing again after a loss.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
/// Bound on one Redis round trip before it counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// Settings of the Redis link (config `[redis]`), as the file spells them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`; empty keeps rooms local. May hold a password.
    pub url: DbUrl,
    /// Key prefix.
    pub prefix: String,
    /// Pool size.
    pub pool_size: u32,
    /// How long a node's members stay in the cluster's presence without a
    /// refresh (a node that died without a goodbye); nodes refresh theirs
    /// every third of it.
    pub presence_ttl_ms: u64,
    /// How long the services lease (which node runs trending, printers and
    /// files) lasts without renewal; another node takes over within it
    /// after the holder dies.
    pub lease_ttl_ms: u64,
}

impl RedisSettings {
    /// # Errors
    /// The first invalid `redis.*` key.
    pub fn validate(&self) -> Result<(), SettingError> {
        let url = self.url.expose();
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(SettingError::key(
                "redis.url",
                "must start with redis:// (or be empty)",
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(SettingError::key(
                "redis.prefix",
                "must be non-empty, without spaces or braces",
            ));
        }
        positive("redis.presence_ttl_ms", self.presence_ttl_ms as f64)?;
        positive("redis.lease_ttl_ms", self.lease_ttl_ms as f64)
    }
}

/// A user of a Pub/Sub channel, fed by the `redis` actor.
pub trait Subscriber: Send + Sync + 'static {
    /// The channel to subscribe to.
    fn channel(&self) -> String;
    /// A message on the channel.
    fn message(&self, payload: &[u8]);
    /// The subscription (re)started: messages sent meanwhile were missed.
    fn subscribed(&self);
}

/// The handle to the cluster link. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    /// This process's id among the nodes sharing this Redis.
    node: String,
    pool: bb8::Pool<RedisConnectionManager>,
    client: redis::Client,
    /// Whether the last command or probe succeeded.
    up: AtomicBool,
    /// Whether every Pub/Sub subscription is live.
    subscribed: AtomicBool,
    /// Pub/Sub messages received.
    received: AtomicU64,
    last_error: Mutex<Option<(String, String)>>,
}

/// Why a cluster operation failed (messages carry no secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(String);

/// Whether `e` says the command was never written, so that sending it
/// again cannot run it twice: the multiplexed connection's pipeline was
/// already closed (an I/O error of its own, with no source), or the write
/// failed (broken pipe, not connected).
fn not_written(e: &redis::RedisError) -> bool {
    use std::error::Error;
    let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
    e.is_connection_dropped()
        && io.is_none_or(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::NotConnected
            )
        })
}

impl Redis {
    /// A link to the Redis at `settings.url`; connects lazily.
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let client =
            redis::Client::open(settings.url.expose()).map_err(|e| format!("redis.url: {e}"))?;
        let manager = RedisConnectionManager::new(settings.url.expose())
            .map_err(|e| format!("redis.url: {e}"))?;
        let pool = bb8::Pool::builder()
            .max_size(settings.pool_size.max(1))
            .connection_timeout(COMMAND_TIMEOUT)
            .retry_connection(false)
            .build_unchecked(manager);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                node: format!("{:016x}", rand::random::<u64>()),
                pool,
                client,
                up: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                received: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// Whether Redis answered last time.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// This process's id among the nodes sharing this Redis (random, new
    /// at every start): in every publication it sends, in presence, and as
    /// the holder of a lease.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The key prefix, so that several systems can share one Redis.
    pub fn prefix(&self) -> &str {
        &self.inner.settings.prefix
    }

    fn failed(&self, e: impl std::fmt::Display) -> RedisError {
        let msg = e.to_string();
        if self.inner.up.swap(false, Ordering::SeqCst) {
            warn!(error = %msg, "redis down; every node serves on its own meanwhile");
        }
        *self.inner.last_error.lock() = Some((msg.clone(), now_rfc3339()));
        RedisError(msg)
    }

    fn succeeded(&self) {
        if !self.inner.up.swap(true, Ordering::SeqCst) {
            info!("redis up; nodes share it again");
        }
    }

    /// A multiplexed connection: one for a hub's publishes keeps their order.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let conn = self.inner.pool.get().await.map_err(|e| self.failed(e))?;
        Ok((*conn).clone())
    }

    /// Runs a script on `conn` (or a pooled connection), bounded by
    /// `COMMAND_TIMEOUT`; every outcome updates [`Redis::is_up`]. A
    /// connection that could not even be written to (a Redis that
    /// restarted since it was opened) is replaced by a fresh one, in
    /// `conn`, and the script sent once more: it never reached Redis, so it
    /// runs once.
    ///
    /// # Errors
    /// Redis is down, did not answer in time, or refused the script.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        conn: Option<&mut MultiplexedConnection>,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut owned;
        let conn = match conn {
            Some(c) => c,
            None => {
                owned = self.connection().await?;
                &mut owned
            }
        };
        let mut answer =
            tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<T>(conn)).await;
        if let Ok(Err(e)) = &answer {
            if not_written(e) {
                *conn = self.connection().await?;
                answer =
                    tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<T>(conn)).await;
            }
        }
        match answer {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("no answer within 1000 ms")),
        }
    }

    /// Publishes `payload` on `channel`, bounded by `COMMAND_TIMEOUT`.
    ///
    /// # Errors
    /// Redis is down or did not answer in time.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), RedisError> {
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        let sent = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, sent).await {
            Ok(Ok(_)) => {
                self.succeeded();
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("no answer within 1000 ms")),
        }
    }

    /// The `redis` actor's spec: permanent, non-critical, stage `storage`.
    /// Each of `subscribers` gets its channel's messages.
    pub fn spec(&self, subscribers: Vec<Arc<dyn Subscriber>>) -> ChildSpec<RedisActor> {
        let cluster = self.clone();
        ChildSpec::new("redis", move |_| RedisActor {
            cluster: cluster.clone(),
            subscribers: subscribers.clone(),
            latency: None,
        })
        .critical(false)
        .stage(Stage::Storage)
    }
}

/// See the module docs.
pub struct RedisActor {
    cluster: Redis,
    /// Who gets which channel's messages.
    subscribers: Vec<Arc<dyn Subscriber>>,
    /// The last PING's round trip.
    latency: Option<Duration>,
}

impl RedisActor {
    /// Keeps `subscriber`'s subscription alive: subscribe, relay, and on
    /// loss retry with back-off; after each (re)subscription the subscriber
    /// is told, since it may have missed messages.
    fn subscribe(&mut self, ctx: &mut Context<Self>, subscriber: Arc<dyn Subscriber>) {
        let cluster = self.cluster.clone();
        let relay = async move {
            let channel = subscriber.channel();
            let backoff = Backoff::full_jitter(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
            let mut failures = 0;
            loop {
                match cluster.inner.client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            cluster.inner.subscribed.store(true, Ordering::SeqCst);
                            failures = 0;
                            subscriber.subscribed();
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                cluster.inner.received.fetch_add(1, Ordering::Relaxed);
                                subscriber.message(msg.get_payload_bytes());
                            }
                            cluster.inner.subscribed.store(false, Ordering::SeqCst);
                            let _ = cluster.failed("the subscription ended");
                        }
                        Err(e) => {
                            let _ = cluster.failed(e);
                        }
                    },
                    Err(e) => {
                        let _ = cluster.failed(e);
                    }
                }
                failures += 1;
                tokio::time::sleep(backoff.random_retry(failures)).await;
            }
        };
        ctx.spawn(relay.into_actor(self));
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        let cluster = self.cluster.clone();
        let ping = async move {
            let began = Instant::now();
            let mut conn = cluster.connection().await?;
            let pong: Result<Result<String, _>, _> =
                tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                    .await;
            match pong {
                Ok(Ok(_)) => {
                    cluster.succeeded();
                    Ok(began.elapsed())
                }
                Ok(Err(e)) => Err(cluster.failed(e)),
                Err(_) => Err(cluster.failed("PING: no answer within 1000 ms")),
            }
        };
        ctx.spawn(ping.into_actor(self).map(|r, act, _| act.latency = r.ok()));
    }
}

impl Actor for RedisActor {
    type Context = Context<Self>;

    /// Subscribes and starts the PING probe. Cannot fail: an unreachable
    /// Redis is a degraded state, not an error.
    fn started(&mut self, ctx: &mut Context<Self>) {
        for subscriber in self.subscribers.clone() {
            self.subscribe(ctx, subscriber);
        }
        self.probe(ctx);
        ctx.run_interval(PROBE_INTERVAL, |act, ctx| act.probe(ctx));
    }
}

impl Child for RedisActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let c = &self.cluster.inner;
        let subscribed = self.subscribers.is_empty() || c.subscribed.load(Ordering::SeqCst);
        let mut h = if self.cluster.is_up() && subscribed {
            Health::healthy()
        } else {
            Health::unhealthy("redis unreachable; every node serves on its own meanwhile")
        };
        if let Some(l) = self.latency {
            h = h.with("ping_ms", l.as_secs_f64() * 1e3);
        }
        if let Some((e, at)) = c.last_error.lock().clone() {
            h = h.with("last_error", e).with("last_error_at", at);
        }
        h.with("subscribed", c.subscribed.load(Ordering::SeqCst))
            .with("received", c.received.load(Ordering::Relaxed))
            .with("prefix", c.settings.prefix.clone())
            .into()
    }
}
