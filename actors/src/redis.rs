//! The `redis` actor and the [`Cluster`] handle: several `holdfast` nodes
//! sharing one Redis form one system of rooms.
//!
//! The mechanism, chosen for correctness first:
//!
//! - **Offsets are assigned by Redis.** A publish runs one Lua script that
//!   `INCR`s the room's counter, builds the `message` frame once, appends it
//!   to the room's stream with the offset as the entry id (`XADD … <n>-0`:
//!   Redis refuses an id that is not greater than the last, so an offset can
//!   never be assigned twice), trims the stream to the history size and
//!   `PUBLISH`es it. Every node therefore sees the same offset for the same
//!   message, with no gap and no duplicate at the source.
//! - **Streams are the truth, Pub/Sub the fast path.** Pub/Sub is
//!   at-most-once: a node that was disconnected, or just joined a room, can
//!   miss messages. Each hub applies a room's messages strictly in offset
//!   order: a message ahead of the next expected one is held back while the
//!   missing range is read from the stream (`XRANGE`), a message at or below
//!   the current offset is a duplicate and dropped, and every second each
//!   hub compares its rooms with Redis's counters to catch a silent loss.
//!   History and `resume` read the stream, so they work across nodes,
//!   including resuming on node B after node A was killed.
//! - **Epochs live in Redis too.** A room's epoch is created with its first
//!   message or join. If Redis loses the room (restarted without
//!   persistence), the counter and the epoch vanish together, so offsets
//!   restart only with a new epoch.
//! - **Redis down:** every node keeps serving its local members. A room then
//!   switches to a node-local epoch (offsets keep increasing, but are no
//!   longer global, and `resume` of the old epoch answers `complete: false`);
//!   health is `degraded` (the actor is non-critical); publishes go back
//!   through Redis as soon as it answers PING again, and the room takes the
//!   cluster's epoch again.
//!
//! All messages go over one channel (`<prefix>:messages`); each node filters
//! the rooms it holds members of. Per-room channels would cut traffic to
//! nodes without members, at the cost of subscription churn; one channel is
//! the simpler correct start.
//!
//! The actor owns the Pub/Sub subscription and the PING probe. Restart
//! policy: permanent, non-critical, stage `storage`. Lost on a crash: the
//! subscription, re-established by the next incarnation, which then asks
//! every hub to reconcile its rooms with the streams.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::RedisConnectionManager;
use bytestring::ByteString;
use futures::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use serde_json::value::RawValue;
use tracing::{info, warn};

use crate::health::{now_rfc3339, Health, HealthReply};
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

/// How often the actor PINGs Redis.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on one Redis round trip before it counts as down.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

/// Publishes one message: assigns the offset, appends to the stream,
/// trims it, announces it. Returns `{epoch, offset}`.
const PUBLISH_LUA: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
local n = redis.call('INCR', KEYS[1])
local frame = '{"type":"message","room":' .. ARGV[2] .. ',"offset":' .. n .. ',"from":' .. ARGV[3] .. ',"data":' .. ARGV[4] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], n .. '-0', 'f', frame)
redis.call('PUBLISH', ARGV[6], ARGV[7] .. '\n' .. epoch .. '\n' .. n .. '\n' .. frame)
return {epoch, n}
"#;

/// The room's epoch (created if new) and latest offset: `{epoch, offset}`.
const HEAD_LUA: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[1], KEYS[3])
end
return {epoch, tonumber(redis.call('GET', KEYS[1]) or '0')}
"#;

/// Epoch, latest offset, oldest offset kept, and the frames in
/// `[ARGV[1], ARGV[2]]`: `{epoch, latest, oldest, o1, f1, o2, f2, ...}`.
const RANGE_LUA: &str = r#"
local epoch = redis.call('GET', KEYS[2]) or ''
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local oldest = 0
if first[1] then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
local out = {epoch, latest, oldest}
local entries = redis.call('XRANGE', KEYS[3], ARGV[1] .. '-0', ARGV[2] .. '-0')
for _, e in ipairs(entries) do
  table.insert(out, tonumber(string.match(e[1], '^(%d+)')))
  table.insert(out, e[2][2])
end
return out
"#;

/// Settings of the cluster link (config `[redis]`).
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Key prefix, so that several systems can share one Redis.
    pub prefix: String,
    /// Pool size.
    pub pool_size: u32,
    /// Stream length kept per room (the history size).
    pub history: usize,
}

/// A message as another node announced it.
#[derive(Debug, Clone)]
pub struct Announced {
    /// The room.
    pub room: Arc<str>,
    /// Its epoch.
    pub epoch: Arc<str>,
    /// Its offset.
    pub offset: u64,
    /// The frame, as every member gets it.
    pub frame: ByteString,
}

/// A range read from a room's stream.
#[derive(Debug, Clone)]
pub struct Range {
    /// The room's epoch ("" when Redis does not know the room).
    pub epoch: Arc<str>,
    /// Its latest offset.
    pub latest: u64,
    /// The oldest offset still in the stream (0 when empty).
    pub oldest: u64,
    /// `(offset, frame)` in offset order.
    pub entries: Vec<(u64, ByteString)>,
}

/// The handle to the cluster link. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    pool: bb8::Pool<RedisConnectionManager>,
    client: redis::Client,
    channel: String,
    publish: redis::Script,
    head: redis::Script,
    range: redis::Script,
    /// Whether the last command or probe succeeded.
    up: AtomicBool,
    /// Whether the Pub/Sub subscription is live.
    subscribed: AtomicBool,
    published: AtomicU64,
    received: AtomicU64,
    last_error: Mutex<Option<(String, String)>>,
}

/// Why a cluster operation failed (messages carry no secrets).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct ClusterError(String);

impl Cluster {
    /// A link to the Redis at `settings.url`; connects lazily.
    ///
    /// # Errors
    /// The URL does not parse.
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| format!("redis.url: {e}"))?;
        let manager = RedisConnectionManager::new(settings.url.as_str())
            .map_err(|e| format!("redis.url: {e}"))?;
        let pool = bb8::Pool::builder()
            .max_size(settings.pool_size.max(1))
            .connection_timeout(COMMAND_TIMEOUT)
            .retry_connection(false)
            .build_unchecked(manager);
        let channel = format!("{}:messages", settings.prefix);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                pool,
                client,
                channel,
                publish: redis::Script::new(PUBLISH_LUA),
                head: redis::Script::new(HEAD_LUA),
                range: redis::Script::new(RANGE_LUA),
                up: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                published: AtomicU64::new(0),
                received: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// Whether Redis answered last time.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    fn keys(&self, room: &str) -> [String; 3] {
        // `{room}` is a hash tag: a room's keys stay on one Redis Cluster slot.
        let p = &self.inner.settings.prefix;
        [
            format!("{p}:{{{room}}}:seq"),
            format!("{p}:{{{room}}}:epoch"),
            format!("{p}:{{{room}}}:log"),
        ]
    }

    fn failed(&self, e: impl std::fmt::Display) -> ClusterError {
        let msg = e.to_string();
        if self.inner.up.swap(false, Ordering::SeqCst) {
            warn!(error = %msg, "redis down; rooms serve their local members only");
        }
        *self.inner.last_error.lock() = Some((msg.clone(), now_rfc3339()));
        ClusterError(msg)
    }

    fn succeeded(&self) {
        if !self.inner.up.swap(true, Ordering::SeqCst) {
            info!("redis up; rooms span nodes");
        }
    }

    /// A multiplexed connection: one for a hub's publishes keeps their order.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn connection(&self) -> Result<MultiplexedConnection, ClusterError> {
        let conn = self.inner.pool.get().await.map_err(|e| self.failed(e))?;
        Ok((*conn).clone())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        conn: Option<&mut MultiplexedConnection>,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut owned;
        let conn = match conn {
            Some(c) => c,
            None => {
                owned = self.connection().await?;
                &mut owned
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<T>(conn)).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(e)),
            Err(_) => Err(self.failed("no answer within 1000 ms")),
        }
    }

    /// Publishes through Redis on `conn`; answers the epoch, the global
    /// offset and the frame.
    ///
    /// # Errors
    /// Redis is down or refused the script.
    pub async fn publish(
        &self,
        conn: &mut MultiplexedConnection,
        room: &str,
        user: &str,
        data: &RawValue,
    ) -> Result<(Arc<str>, u64, ByteString), ClusterError> {
        let keys = self.keys(room);
        let room_json = serde_json::to_string(room).unwrap_or_default();
        let user_json = serde_json::to_string(user).unwrap_or_default();
        let mut inv = self.inner.publish.prepare_invoke();
        inv.key(&keys[0]).key(&keys[1]).key(&keys[2]);
        inv.arg(new_epoch())
            .arg(&room_json)
            .arg(&user_json)
            .arg(data.get())
            .arg(self.inner.settings.history.max(1))
            .arg(&self.inner.channel)
            .arg(room);
        let (epoch, offset): (String, u64) = self.run(Some(conn), inv).await?;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let frame = format!(
            r#"{{"type":"message","room":{room_json},"offset":{offset},"from":{user_json},"data":{}}}"#,
            data.get()
        );
        Ok((epoch.into(), offset, frame.into()))
    }

    /// The room's epoch (created when new) and latest offset.
    ///
    /// # Errors
    /// Redis is down.
    pub async fn head(&self, room: &str) -> Result<(Arc<str>, u64), ClusterError> {
        let keys = self.keys(room);
        let mut inv = self.inner.head.prepare_invoke();
        inv.key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .arg(new_epoch());
        let (epoch, offset): (String, u64) = self.run(None, inv).await?;
        Ok((epoch.into(), offset))
    }

    /// The frames of `room` with offsets in `from..=to` still in the stream.
    ///
    /// # Errors
    /// Redis is down.
    pub async fn range(&self, room: &str, from: u64, to: u64) -> Result<Range, ClusterError> {
        let keys = self.keys(room);
        let mut inv = self.inner.range.prepare_invoke();
        inv.key(&keys[0])
            .key(&keys[1])
            .key(&keys[2])
            .arg(from.max(1))
            .arg(to);
        let values: Vec<redis::Value> = self.run(None, inv).await?;
        let text = |v: &redis::Value| -> String {
            match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                redis::Value::Int(i) => i.to_string(),
                _ => String::new(),
            }
        };
        let num = |v: &redis::Value| text(v).parse::<u64>().unwrap_or(0);
        let mut it = values.iter();
        let epoch = it.next().map(text).unwrap_or_default();
        let latest = it.next().map(num).unwrap_or(0);
        let oldest = it.next().map(num).unwrap_or(0);
        let mut entries = Vec::new();
        while let (Some(o), Some(f)) = (it.next(), it.next()) {
            entries.push((num(o), ByteString::from(text(f))));
        }
        Ok(Range {
            epoch: epoch.into(),
            latest,
            oldest,
            entries,
        })
    }

    /// The `redis` actor's spec: permanent, non-critical, stage `storage`.
    pub fn spec(&self, rooms: crate::rooms::Rooms) -> ChildSpec<RedisActor> {
        let cluster = self.clone();
        ChildSpec::new("redis", move |_| RedisActor {
            cluster: cluster.clone(),
            rooms: rooms.clone(),
            latency: None,
        })
        .critical(false)
        .stage(Stage::Storage)
    }
}

/// A new random epoch: 16 hex digits.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Parses a Pub/Sub payload: `room \n epoch \n offset \n frame`.
fn parse_announcement(payload: &[u8]) -> Option<Announced> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, '\n');
    let room = parts.next()?;
    let epoch = parts.next()?;
    let offset = parts.next()?.parse().ok()?;
    let frame = parts.next()?;
    Some(Announced {
        room: room.into(),
        epoch: epoch.into(),
        offset,
        frame: ByteString::from(frame.to_owned()),
    })
}

/// See the module docs.
pub struct RedisActor {
    cluster: Cluster,
    rooms: crate::rooms::Rooms,
    /// The last PING's round trip.
    latency: Option<Duration>,
}

impl RedisActor {
    /// Keeps a subscription alive: subscribe, relay, and on loss retry with
    /// back-off; after each (re)subscription every hub reconciles.
    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let cluster = self.cluster.clone();
        let rooms = self.rooms.clone();
        let relay = async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match cluster.inner.client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&cluster.inner.channel).await {
                        Ok(()) => {
                            cluster.inner.subscribed.store(true, Ordering::SeqCst);
                            delay = Duration::from_millis(100);
                            rooms.reconcile_all();
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                if let Some(a) = parse_announcement(msg.get_payload_bytes()) {
                                    cluster.inner.received.fetch_add(1, Ordering::Relaxed);
                                    rooms.announce(a);
                                }
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
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
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
        self.subscribe(ctx);
        self.probe(ctx);
        ctx.run_interval(PROBE_INTERVAL, |act, ctx| act.probe(ctx));
    }
}

impl Child for RedisActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let c = &self.cluster.inner;
        let mut h = if self.cluster.is_up() && c.subscribed.load(Ordering::SeqCst) {
            Health::healthy()
        } else {
            Health::unhealthy("redis unreachable; rooms serve local members only")
        };
        if let Some(l) = self.latency {
            h = h.with("ping_ms", l.as_secs_f64() * 1e3);
        }
        if let Some((e, at)) = c.last_error.lock().clone() {
            h = h.with("last_error", e).with("last_error_at", at);
        }
        h.with("subscribed", c.subscribed.load(Ordering::SeqCst))
            .with("published", c.published.load(Ordering::Relaxed))
            .with("received", c.received.load(Ordering::Relaxed))
            .with("prefix", c.settings.prefix.clone())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_split_on_the_first_three_newlines_only() {
        let a = parse_announcement(b"lobby\nabc\n42\n{\"data\":\"a\nb\"}").unwrap();
        assert_eq!((&*a.room, &*a.epoch, a.offset), ("lobby", "abc", 42));
        assert_eq!(&*a.frame, "{\"data\":\"a\nb\"}");
        assert!(parse_announcement(b"lobby\nabc\nx\n{}").is_none());
    }
}
