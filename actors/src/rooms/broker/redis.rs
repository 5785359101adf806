//! The Redis broker: several nodes sharing one Redis form one system of
//! rooms.
//!
//! The mechanism, chosen for correctness first:
//!
//! - **Offsets are assigned by Redis.** A publish runs one Lua script that
//!   `INCR`s the room's counter, appends the message (its sender and data,
//!   not a frame: the frame has one encoder, `rooms::message_frame`) to the
//!   room's stream with the offset as the entry id (`XADD … <n>-0`: Redis
//!   refuses an id that is not greater than the last, so an offset can never
//!   be assigned twice), trims the stream to the history size and
//!   `PUBLISH`es it with this node's id. Every node therefore sees the same
//!   offset for the same message, with no gap and no duplicate at the source.
//! - **Streams are the truth, Pub/Sub the fast path.** Pub/Sub is at most
//!   once: a node that was disconnected, or just joined a room, can miss
//!   messages. Hubs apply a room's publications in offset order (see
//!   `sequence`), reading gaps from the stream (`XRANGE`), and every second
//!   each hub compares its rooms with Redis's counters to catch a silent
//!   loss. History and `resume` read the stream, so they work across nodes,
//!   including resuming on node B after node A was killed.
//! - **A node sees its own publication once.** The script's answer applies
//!   it; the Pub/Sub copy carries the node's id and is skipped on arrival.
//!   A publish whose answer did not come is sent again under the same id
//!   until Redis answers, rather than served on a node-local epoch while it
//!   may have run (`publish`).
//! - **Epochs live in Redis too.** A room's epoch is created with its first
//!   message or join. If Redis loses the room (restarted without
//!   persistence), the counter and the epoch vanish together, so offsets
//!   restart only with a new epoch.
//!
//! All publications go over one channel (`<prefix>:messages`); each node
//! filters the rooms it holds members of. Per-room channels would cut
//! traffic to nodes without members, at the cost of subscription churn; one
//! channel is the simpler correct start.
//!
//! Publishes go over one multiplexed connection, in the order the hubs
//! send them, so that Redis runs each hub's publishes in the order the hub
//! received them.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytestring::ByteString;
use redis::aio::MultiplexedConnection;
use serde_json::value::RawValue;

use super::{
    new_epoch, Broker, BrokerError, BrokerFuture, History, Inbound, Membership, Position,
    Publication, Reply,
};
use crate::redis::{Redis, RedisError, Subscriber};
use crate::rooms::{message_frame, PresenceEntry, RoomOptions, RoomSummary};

mod publish;

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

/// Epoch, latest offset, oldest offset kept, and the messages in
/// `[ARGV[1], ARGV[2]]`: `{epoch, latest, oldest, o1, u1, d1, ...}`.
const RANGE_LUA: &str = r#"
local epoch = redis.call('GET', KEYS[2]) or ''
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local oldest = 0
if first[1] then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
local out = {epoch, latest, oldest}
local entries = redis.call('XRANGE', KEYS[3], ARGV[1] .. '-0', ARGV[2] .. '-0')
for _, e in ipairs(entries) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  table.insert(out, tonumber(string.match(e[1], '^(%d+)')))
  table.insert(out, f['u'] or '')
  table.insert(out, f['d'] or 'null')
end
return out
"#;

/// This node's members of one room: `KEYS[1]` the room's set of nodes with
/// members, `KEYS[2]` this node's hash of them (session -> user); `ARGV[1]`
/// the node, `ARGV[2]` the expiry (ms), `ARGV[3]` the channel, `ARGV[4]`
/// the room, `ARGV[5]` the change (`+`: add the pairs that follow, `-`:
/// remove the sessions that follow, `=`: replace with the pairs that
/// follow). Both keys expire unless refreshed, so that a node that dies
/// without a goodbye leaves presence within the expiry. A join or leave is
/// announced on the channel (`presence \n node \n room`) for the other
/// nodes' presence events.
const MEMBERS_LUA: &str = r#"
if ARGV[5] == '=' then redis.call('DEL', KEYS[2]) end
if ARGV[5] == '-' then
  for i = 6, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
else
  for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
if ARGV[5] ~= '=' then
  redis.call('PUBLISH', ARGV[3], 'presence\n' .. ARGV[1] .. '\n' .. ARGV[4])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2] * 2)
else
  redis.call('SREM', KEYS[1], ARGV[1])
end
return 1
"#;

/// Marks rooms as having members on some node: `KEYS[1]` the index of
/// rooms (a sorted set scored by when a node last said so, in Redis's
/// clock, ms), `ARGV` the rooms. Nodes say it on a join and at every
/// presence refresh; [`ROOMS_LUA`] forgets what no node said for a
/// presence expiry.
const INDEX_LUA: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
return 1
"#;

/// The indexed rooms (`KEYS[1]`, see [`INDEX_LUA`]) whose names start with
/// `ARGV[1]`, after forgetting those no node marked for `ARGV[2]` ms.
const ROOMS_LUA: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local out = {}
for _, r in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(r, 1, #ARGV[1]) == ARGV[1] then table.insert(out, r) end
end
return out
"#;

/// One room's member sessions on every node, latest offset and epoch:
/// `KEYS[1]` its set of nodes (hashes `KEYS[1]:<node>`), `KEYS[2]` its
/// counter, `KEYS[3]` its epoch (one hash slot). `{sessions, offset, epoch}`.
const SUMMARY_LUA: &str = r#"
local sessions = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  sessions = sessions + redis.call('HLEN', KEYS[1] .. ':' .. n)
end
return {sessions, tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('GET', KEYS[3]) or ''}
"#;

/// How many rooms' summaries a listing reads at once.
const SUMMARIES_IN_FLIGHT: usize = 64;

/// How a presence signal on the channel starts (a node id, which starts a
/// publication, is hex).
const PRESENCE_SIGNAL: &[u8] = b"presence\n";

/// Every node's members of one room: the users, one per session. `KEYS[1]`
/// is the room's set of nodes; each node's hash is `KEYS[1]:<node>` (the
/// same hash slot, through the `{room}` tag). Nodes whose hash expired are
/// dropped from the set. `ARGV[1]`: a node to leave out ('' for none).
const PRESENCE_LUA: &str = r#"
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local users = redis.call('HVALS', KEYS[1] .. ':' .. n)
  if #users == 0 then
    redis.call('SREM', KEYS[1], n)
  elseif n ~= ARGV[1] then
    for _, u in ipairs(users) do table.insert(out, u) end
  end
end
return out
"#;

/// The rooms' broker over Redis. Cheap to clone. See the module docs.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    /// This node's id, sent with every publication so that it skips its own.
    node: String,
    /// Each room's history: its stream is trimmed to about the size (at
    /// least one entry, which gap filling across nodes reads).
    options: Arc<dyn RoomOptions>,
    /// How long a node's members stay in presence without a refresh.
    presence_ttl: Duration,
    /// The Pub/Sub channel of publications.
    channel: String,
    publish: redis::Script,
    head: redis::Script,
    range: redis::Script,
    members: redis::Script,
    presence: redis::Script,
    index: redis::Script,
    rooms: redis::Script,
    summary: redis::Script,
    /// The sorted set of rooms with members on some node.
    index_key: String,
    /// The connection every publish goes over, once obtained. Publishes
    /// take it in the order they were made (the lock is fair), so that one
    /// hub's publishes reach Redis in the order the hub made them.
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Where other nodes' publications go (the rooms), once attached.
    inbound: OnceLock<Arc<dyn Inbound>>,
}

impl RedisBroker {
    /// A broker over `redis`, keeping each room's history as `options`
    /// say; a node's members leave presence `presence_ttl` after its last
    /// refresh.
    pub fn new(redis: Redis, options: Arc<dyn RoomOptions>, presence_ttl: Duration) -> Self {
        let channel = format!("{}:messages", redis.prefix());
        let index_key = format!("{}:rooms", redis.prefix());
        Self {
            inner: Arc::new(Inner {
                node: redis.node().to_owned(),
                redis,
                options,
                presence_ttl: presence_ttl.max(Duration::from_millis(3)),
                channel,
                publish: redis::Script::new(publish::PUBLISH_LUA),
                head: redis::Script::new(HEAD_LUA),
                range: redis::Script::new(RANGE_LUA),
                members: redis::Script::new(MEMBERS_LUA),
                presence: redis::Script::new(PRESENCE_LUA),
                index: redis::Script::new(INDEX_LUA),
                rooms: redis::Script::new(ROOMS_LUA),
                summary: redis::Script::new(SUMMARY_LUA),
                index_key,
                conn: tokio::sync::Mutex::new(None),
                inbound: OnceLock::new(),
            }),
        }
    }

    /// What the `redis` actor feeds with this broker's channel.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.clone())
    }

    fn keys(&self, room: &str) -> [String; 3] {
        // `{room}` is a hash tag: a room's keys stay on one Redis Redis slot.
        let p = self.inner.redis.prefix();
        [
            format!("{p}:{{{room}}}:seq"),
            format!("{p}:{{{room}}}:epoch"),
            format!("{p}:{{{room}}}:log"),
        ]
    }

    /// The room's set of nodes with members, and this node's hash of them.
    fn presence_keys(&self, room: &str) -> [String; 2] {
        let nodes = format!("{}:{{{room}}}:presence", self.inner.redis.prefix());
        let mine = format!("{nodes}:{}", self.inner.node);
        [nodes, mine]
    }
}

impl Inner {
    /// The publish connection, obtained on first use.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = self.redis.connection().await?;
        *conn = Some(c.clone());
        Ok(c)
    }
}

fn down() -> BrokerError {
    BrokerError("redis is down".into())
}

fn failed(e: RedisError) -> BrokerError {
    BrokerError(e.to_string())
}

impl Broker for RedisBroker {
    fn shared(&self) -> bool {
        true
    }

    fn is_up(&self) -> bool {
        self.inner.redis.is_up()
    }

    fn publish(
        &self,
        room: &str,
        _here: &Position,
        user: &str,
        data: &RawValue,
    ) -> Reply<Position> {
        if !self.is_up() {
            return Reply::Now(Err(down()));
        }
        let message = publish::Message {
            keys: self.keys(room),
            room_json: serde_json::to_string(room).unwrap_or_default(),
            user_json: serde_json::to_string(user).unwrap_or_default(),
            data: data.get().to_owned(),
            history: self.inner.options.history(room).size.max(1),
        };
        let inner = self.inner.clone();
        Reply::Later(Box::pin(async move { inner.publish(message).await }))
    }

    fn head(&self, room: &str, _here: &Position) -> Reply<Position> {
        if !self.is_up() {
            return Reply::Now(Err(down()));
        }
        let keys = self.keys(room);
        let inner = self.inner.clone();
        Reply::Later(Box::pin(async move {
            let mut inv = inner.head.prepare_invoke();
            inv.key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(new_epoch());
            let (epoch, offset): (String, u64) =
                inner.redis.run(None, inv).await.map_err(failed)?;
            Ok(Position {
                epoch: epoch.into(),
                offset,
            })
        }))
    }

    fn history(&self, room: &str, from: u64, to: u64) -> Reply<Option<History>> {
        if !self.is_up() {
            return Reply::Now(Err(down()));
        }
        let keys = self.keys(room);
        let inner = self.inner.clone();
        let room = room.to_owned();
        Reply::Later(Box::pin(async move {
            let mut inv = inner.range.prepare_invoke();
            inv.key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(from.max(1))
                .arg(to);
            let values: Vec<redis::Value> = inner.redis.run(None, inv).await.map_err(failed)?;
            Ok(Some(parse_range(&room, &values)))
        }))
    }

    fn presence(&self, room: &str) -> Reply<Option<Vec<PresenceEntry>>> {
        self.read_presence(room, false)
    }

    fn presence_elsewhere(&self, room: &str) -> Reply<Option<Vec<PresenceEntry>>> {
        self.read_presence(room, true)
    }

    fn members(&self, room: &str, change: Membership) -> Option<BrokerFuture<()>> {
        self.write_members(room, change)
    }

    fn rooms(&self, prefix: &str, limit: usize) -> Reply<Option<Vec<RoomSummary>>> {
        if !self.is_up() {
            return Reply::Now(Err(down()));
        }
        let broker = self.clone();
        let prefix = prefix.to_owned();
        Reply::Later(Box::pin(async move {
            broker.list_rooms(&prefix, limit).await.map(Some)
        }))
    }

    fn presence_refresh(&self) -> Option<Duration> {
        Some(self.inner.presence_ttl / 3)
    }

    fn attach(&self, inbound: Arc<dyn Inbound>) {
        let _ = self.inner.inbound.set(inbound);
    }
}

impl RedisBroker {
    /// Every node's members of `room` (but this node's, `elsewhere`).
    fn read_presence(&self, room: &str, elsewhere: bool) -> Reply<Option<Vec<PresenceEntry>>> {
        if !self.is_up() {
            return Reply::Now(Err(down()));
        }
        let [nodes, _] = self.presence_keys(room);
        let inner = self.inner.clone();
        let skip = if elsewhere {
            inner.node.clone()
        } else {
            String::new()
        };
        Reply::Later(Box::pin(async move {
            // The same connection as membership changes: a read sees every
            // change the hub made before it.
            let mut conn = inner.connection().await.map_err(failed)?;
            let mut inv = inner.presence.prepare_invoke();
            inv.key(&nodes).arg(&skip);
            let users: Vec<String> = inner
                .redis
                .run(Some(&mut conn), inv)
                .await
                .map_err(failed)?;
            let mut by_user: BTreeMap<String, usize> = BTreeMap::new();
            for user in users {
                *by_user.entry(user).or_default() += 1;
            }
            Ok(Some(
                by_user
                    .into_iter()
                    .map(|(user, sessions)| PresenceEntry { user, sessions })
                    .collect(),
            ))
        }))
    }

    /// This node's members of `room` changed (see [`Broker::members`]).
    fn write_members(&self, room: &str, change: Membership) -> Option<BrokerFuture<()>> {
        if !self.is_up() {
            return None; // the next refresh after Redis is back repairs it
        }
        let [nodes, mine] = self.presence_keys(room);
        let inner = self.inner.clone();
        let room = room.to_owned();
        Some(Box::pin(async move {
            let mut conn = inner.connection().await.map_err(failed)?;
            let mut inv = inner.members.prepare_invoke();
            inv.key(&nodes)
                .key(&mine)
                .arg(&inner.node)
                .arg(inner.presence_ttl.as_millis() as u64)
                .arg(&inner.channel)
                .arg(&room);
            let present = match &change {
                Membership::Joined { .. } => true,
                Membership::All(members) => !members.is_empty(),
                Membership::Left { .. } => false,
            };
            match &change {
                Membership::Joined { session, user } => {
                    inv.arg("+").arg(&**session).arg(&**user);
                }
                Membership::Left { session } => {
                    inv.arg("-").arg(&**session);
                }
                Membership::All(members) => {
                    inv.arg("=");
                    for (session, user) in members {
                        inv.arg(&**session).arg(&**user);
                    }
                }
            }
            inner
                .redis
                .run::<i64>(Some(&mut conn), inv)
                .await
                .map_err(failed)?;
            if present {
                let mut inv = inner.index.prepare_invoke();
                inv.key(&inner.index_key).arg(&room);
                inner
                    .redis
                    .run::<i64>(Some(&mut conn), inv)
                    .await
                    .map_err(failed)?;
            }
            Ok(())
        }))
    }

    /// The rooms with members on some node (see [`Broker::rooms`]): the
    /// index names them, each room's own keys count its members (a room
    /// whose members all left is not listed).
    async fn list_rooms(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<RoomSummary>, BrokerError> {
        use futures::stream::{self, StreamExt, TryStreamExt};

        let inner = &self.inner;
        let mut inv = inner.rooms.prepare_invoke();
        inv.key(&inner.index_key)
            .arg(prefix)
            .arg(inner.presence_ttl.as_millis() as u64);
        let mut names: Vec<String> = inner.redis.run(None, inv).await.map_err(failed)?;
        names.sort_unstable();
        let conn = inner.connection().await.map_err(failed)?;
        let summaries: Vec<RoomSummary> = stream::iter(names)
            .map(|room| {
                let mut conn = conn.clone();
                async move {
                    let [nodes, _] = self.presence_keys(&room);
                    let [seq, epoch, _] = self.keys(&room);
                    let mut inv = inner.summary.prepare_invoke();
                    inv.key(&nodes).key(&seq).key(&epoch);
                    let (members, offset, epoch): (usize, u64, String) = inner
                        .redis
                        .run(Some(&mut conn), inv)
                        .await
                        .map_err(failed)?;
                    Ok::<_, BrokerError>(RoomSummary {
                        room,
                        members,
                        offset,
                        epoch,
                    })
                }
            })
            .buffered(SUMMARIES_IN_FLIGHT)
            .try_filter(|r| std::future::ready(r.members > 0))
            .take(limit)
            .try_collect()
            .await?;
        Ok(summaries)
    }
}

impl Subscriber for RedisBroker {
    fn channel(&self) -> String {
        self.inner.channel.clone()
    }

    fn message(&self, payload: &[u8]) {
        let Some(inbound) = self.inner.inbound.get() else {
            return;
        };
        if let Some(rest) = payload.strip_prefix(PRESENCE_SIGNAL) {
            let text = std::str::from_utf8(rest).unwrap_or_default();
            match text.split_once('\n') {
                Some((node, _)) if node == self.inner.node => {} // told by its own hub
                Some((_, room)) => inbound.presence_changed(room),
                None => tracing::warn!("a presence signal without a room; ignored"),
            }
            return;
        }
        match parse_announcement(payload) {
            Some((node, _)) if node == self.inner.node => {} // applied when the script answered
            Some((_, publication)) => inbound.publication(publication),
            None => tracing::warn!(
                channel = %self.inner.channel,
                "a message on the rooms' channel that is not a publication; ignored"
            ),
        }
    }

    fn subscribed(&self) {
        if let Some(inbound) = self.inner.inbound.get() {
            inbound.resync();
        }
    }
}

/// Text of a script's answer.
fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// The `message` frame of a stored message: its sender as JSON and its data.
fn frame(room: &str, offset: u64, user_json: &str, data: &str) -> Option<ByteString> {
    let user: String = serde_json::from_str(user_json).ok()?;
    let data: Box<RawValue> = serde_json::from_str(data).ok()?;
    Some(message_frame(room, offset, &user, &data))
}

/// `RANGE_LUA`'s answer.
fn parse_range(room: &str, values: &[redis::Value]) -> History {
    let num = |v: &redis::Value| text(v).parse::<u64>().unwrap_or(0);
    let mut it = values.iter();
    let epoch = it.next().map(text).unwrap_or_default();
    let latest = it.next().map(num).unwrap_or(0);
    let oldest = it.next().map(num).unwrap_or(0);
    let mut entries = Vec::new();
    while let (Some(o), Some(u), Some(d)) = (it.next(), it.next(), it.next()) {
        let offset = num(o);
        if let Some(f) = frame(room, offset, &text(u), &text(d)) {
            entries.push((offset, f));
        }
    }
    History {
        head: Position {
            epoch: epoch.into(),
            offset: latest,
        },
        oldest,
        entries,
    }
}

/// Parses a Pub/Sub payload, `node \n room \n epoch \n offset \n user \n
/// data` (the user is JSON, so it holds no newline; the data may): the
/// publishing node and the publication.
fn parse_announcement(payload: &[u8]) -> Option<(&str, Publication)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, '\n');
    let node = parts.next()?;
    let room = parts.next()?;
    let epoch = parts.next()?;
    let offset = parts.next()?.parse().ok()?;
    let user = parts.next()?;
    let data = parts.next()?;
    let frame = frame(room, offset, user, data)?;
    Some((
        node,
        Publication {
            room: room.into(),
            position: Position {
                epoch: epoch.into(),
                offset,
            },
            frame,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_split_on_the_first_five_newlines_and_build_the_frame() {
        let (node, p) =
            parse_announcement(b"n1\nlobby\nabc\n42\n\"u\"\n{\"d\":\"a\\nb\",\n\"x\":1}").unwrap();
        assert_eq!(node, "n1");
        assert_eq!(
            (&*p.room, &*p.position.epoch, p.position.offset),
            ("lobby", "abc", 42)
        );
        assert_eq!(
            &*p.frame,
            "{\"type\":\"message\",\"room\":\"lobby\",\"offset\":42,\"from\":\"u\",\"data\":{\"d\":\"a\\nb\",\n\"x\":1}}"
        );
        assert!(parse_announcement(b"n1\nlobby\nabc\nx\n\"u\"\n{}").is_none());
        assert!(parse_announcement(b"n1\nlobby\nabc\n1\nu\n{}").is_none());
    }
}
