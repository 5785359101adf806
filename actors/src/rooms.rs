//! The `rooms` actors: room hubs, sharded over several arbiters.
//!
//! Owns: every room's membership, offset, epoch and history ring, split over
//! `rooms-0`, `rooms-1`, ... (one hub per shard, each on its own arbiter, all
//! under the supervisor `rooms`). A room lives in the shard its name hashes to.
//! Answers: [`Join`], [`Leave`], [`Publish`], [`Presence`], [`Resume`],
//! [`Crash`] (chaos), through the [`Rooms`] handle.
//! Fan-out: a published message is serialized once, into a [`ByteString`],
//! and that same buffer goes to every member (and into the history ring).
//! A member is reached through its [`Inbox`]: an actor's mailbox (one send
//! per member), or an [`Outlet`] that serves many members, such as an HTTP
//! worker thread with its WebSocket connections. A room sends a message to
//! each outlet once, however many of its members the outlet serves, so
//! fan-out to a thousand members costs the hub a few sends, not a thousand.
//! Restart policy: permanent, critical, stage `connections`.
//! Lost on a crash: only the request being handled when the hub panicked. A
//! shard's state lives outside its hub (in [`Rooms`]) and every incarnation
//! is handed the same state, so membership, offsets, epochs and history
//! survive: offsets continue without a gap or a reset and every acknowledged
//! message stays in history. A publish is applied only once it cannot fail,
//! so a panic never leaves a half-assigned offset. Requests that arrive while
//! a hub restarts are refused with [`RoomError::Unavailable`] (the protocol's
//! `unavailable`), never dropped in silence.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytestring::ByteString;
use parking_lot::Mutex;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tracing::warn;

use crate::health::{Health, HealthReply};
use crate::shutdown::Stage;
use crate::supervision::{AnyChildSpec, Child, ChildRef, ChildSpec, Intensity, SupervisorSpec};

/// How often a hub drops members whose connection is gone without a `Leave`.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Mailbox capacity of a hub; `send` waits past it (back-pressure on publishers).
const HUB_MAILBOX: usize = 4096;

/// History limits of every room.
#[derive(Clone, Copy, Debug)]
pub struct RoomConfig {
    /// Messages kept per room.
    pub history_size: usize,
    /// Oldest message kept.
    pub history_max_age: Duration,
}

/// Why a room request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room's hub is restarting or stopped; safe to retry.
    #[error("the room service is restarting; retry")]
    Unavailable,
}

/// What a hub sends to a member's connection.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub enum RoomEvent {
    /// A message: the frame to write as is.
    Message {
        /// The room.
        room: Arc<str>,
        /// Its offset.
        offset: u64,
        /// The serialized `message` frame, shared by every member.
        frame: ByteString,
        /// When the hub accepted it (publish-to-deliver latency); `None` for replays.
        published_at: Option<Instant>,
    },
    /// The answer to a join, sent through the same channel as messages so
    /// that it reaches the client before any message that follows it.
    Joined {
        /// The room.
        room: Arc<str>,
        /// The room's latest offset at the join.
        offset: u64,
        /// The room's epoch.
        epoch: Arc<str>,
        /// The request id to echo.
        id: Option<Value>,
    },
    /// The answer to a leave the client asked for, sent through the same
    /// channel as messages: after it, nothing of the room reaches the member.
    Left {
        /// The room.
        room: Arc<str>,
        /// The request id to echo.
        id: Option<Value>,
    },
    /// The end of a resume replay for one room; every replayed message of the
    /// room was sent before it.
    Replayed {
        /// The room.
        room: Arc<str>,
        /// How many messages were replayed.
        replayed: u64,
        /// Whether history reached back to the client's offset (and the epoch matched).
        complete: bool,
        /// The room's epoch.
        epoch: Arc<str>,
        /// The latest offset replayed or current.
        offset: u64,
    },
}

/// A connection in a room.
#[derive(Clone)]
pub struct Member {
    /// Its session id.
    pub session: Arc<str>,
    /// Its user id.
    pub user: Arc<str>,
    /// Where its events go.
    pub inbox: Inbox,
}

/// Where a member's events go.
#[derive(Clone)]
pub enum Inbox {
    /// An actor's mailbox: every event is one message to it.
    Actor(Recipient<RoomEvent>),
    /// One of the members an [`Outlet`] serves, known to it as `slot`.
    Outlet {
        /// The outlet.
        outlet: Arc<dyn Outlet>,
        /// The member's number at that outlet.
        slot: u64,
    },
}

impl Inbox {
    fn send(&self, event: RoomEvent) {
        match self {
            Self::Actor(recipient) => recipient.do_send(event),
            Self::Outlet { outlet, slot } => outlet.direct(*slot, event),
        }
    }

    fn connected(&self) -> bool {
        match self {
            Self::Actor(recipient) => recipient.connected(),
            Self::Outlet { outlet, slot } => outlet.connected(*slot),
        }
    }

    /// Whether both reach the same connection.
    fn same(&self, other: &Inbox) -> bool {
        match (self, other) {
            (Self::Actor(a), Self::Actor(b)) => a == b,
            (Self::Outlet { outlet: a, slot: x }, Self::Outlet { outlet: b, slot: y }) => {
                x == y && Arc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}

/// Serves many members at once, e.g. every connection of one HTTP worker
/// thread. Calls come from hub threads and must not block.
pub trait Outlet: Send + Sync {
    /// A message of `room`, for every member of the room this outlet serves.
    /// Outlets see a room's messages in offset order, after the `Joined` or
    /// `Replayed` of each member they serve.
    fn broadcast(
        &self,
        room: &Arc<str>,
        offset: u64,
        frame: &ByteString,
        published_at: Option<Instant>,
    );
    /// An event for the one member `slot` (joined, replayed, a replayed message).
    fn direct(&self, slot: u64, event: RoomEvent);
    /// Whether member `slot` is still connected.
    fn connected(&self, slot: u64) -> bool;
}

/// One message of history.
struct Entry {
    offset: u64,
    frame: ByteString,
    at: Instant,
}

/// One room.
struct Room {
    /// Members by session id.
    members: HashMap<Arc<str>, Member>,
    /// The outlets serving members, with how many each serves.
    outlets: Vec<(Arc<dyn Outlet>, usize)>,
    /// Members reached through an actor's mailbox.
    actors: usize,
    /// The latest offset assigned; the next message gets `offset + 1`.
    offset: u64,
    /// Changes whenever offsets restart (a new room, history lost).
    epoch: Arc<str>,
    /// Recent messages, oldest first, bounded by size and age.
    history: VecDeque<Entry>,
    /// With Redis: whether `epoch` and `offset` are the cluster's (false
    /// while the room runs on a node-local epoch).
    synced: bool,
    /// With Redis: messages ahead of `offset + 1`, held until the gap is filled.
    held: BTreeMap<u64, (ByteString, Option<Instant>)>,
    /// With Redis: a read of the stream to fill a gap is in flight.
    filling: bool,
}

impl Room {
    fn new() -> Self {
        Self {
            members: HashMap::new(),
            outlets: Vec::new(),
            actors: 0,
            offset: 0,
            epoch: new_epoch().into(),
            history: VecDeque::new(),
            synced: false,
            held: BTreeMap::new(),
            filling: false,
        }
    }

    /// Adds (or replaces) a member.
    fn add(&mut self, member: Member) {
        self.count(&member.inbox, true);
        if let Some(old) = self.members.insert(member.session.clone(), member) {
            self.count(&old.inbox, false);
        }
    }

    /// Removes `member`, unless its session is in the room through another
    /// connection now (it was resumed elsewhere).
    fn remove_member(&mut self, member: &Member) {
        let same = self
            .members
            .get(&member.session)
            .is_some_and(|m| m.inbox.same(&member.inbox));
        if same {
            self.remove(&member.session);
        }
    }

    /// Removes a member.
    fn remove(&mut self, session: &str) {
        if let Some(old) = self.members.remove(session) {
            self.count(&old.inbox, false);
        }
    }

    /// Drops members whose connection is gone.
    fn retain_connected(&mut self) {
        let gone: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| !m.inbox.connected())
            .map(|(session, _)| session.clone())
            .collect();
        for session in gone {
            self.remove(&session);
        }
    }

    /// Counts `inbox` into (or out of) the room's outlets and actor members,
    /// keeping them in step with `members`.
    fn count(&mut self, inbox: &Inbox, add: bool) {
        match inbox {
            Inbox::Actor(_) if add => self.actors += 1,
            Inbox::Actor(_) => self.actors -= 1,
            Inbox::Outlet { outlet, .. } => {
                let outlets = &mut self.outlets;
                let at = outlets.iter().position(|(o, _)| Arc::ptr_eq(o, outlet));
                match (at, add) {
                    (Some(i), true) => outlets[i].1 += 1,
                    (None, true) => outlets.push((outlet.clone(), 1)),
                    (Some(i), false) => {
                        outlets[i].1 -= 1;
                        if outlets[i].1 == 0 {
                            outlets.swap_remove(i);
                        }
                    }
                    (None, false) => {}
                }
            }
        }
    }

    /// Adopts the cluster's epoch and offset; history of another epoch is dropped.
    fn sync(&mut self, epoch: Arc<str>, latest: u64) {
        if !self.synced || self.epoch != epoch {
            self.epoch = epoch;
            self.offset = latest;
            self.history.clear();
            self.held.clear();
            self.synced = true;
        } else if latest > self.offset && self.held.is_empty() && self.history.is_empty() {
            self.offset = latest;
        }
    }

    /// Appends a message and sends it to every member.
    fn deliver(
        &mut self,
        room: &Arc<str>,
        offset: u64,
        frame: ByteString,
        at: Option<Instant>,
        config: &RoomConfig,
    ) {
        let now = Instant::now();
        self.history.push_back(Entry {
            offset,
            frame: frame.clone(),
            at: now,
        });
        self.offset = offset;
        self.prune(config, now);
        if self.actors > 0 {
            for member in self.members.values() {
                if let Inbox::Actor(recipient) = &member.inbox {
                    recipient.do_send(RoomEvent::Message {
                        room: room.clone(),
                        offset,
                        frame: frame.clone(),
                        published_at: at,
                    });
                }
            }
        }
        for (outlet, _) in &self.outlets {
            outlet.broadcast(room, offset, &frame, at);
        }
    }

    fn prune(&mut self, config: &RoomConfig, now: Instant) {
        while self.history.len() > config.history_size
            || self
                .history
                .front()
                .is_some_and(|e| now.duration_since(e.at) > config.history_max_age)
        {
            self.history.pop_front();
        }
    }
}

/// A new random epoch: 16 hex digits.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A shard's state, shared by every incarnation of its hub.
#[derive(Default)]
struct ShardState {
    rooms: HashMap<Arc<str>, Room>,
    /// Messages published through this shard.
    published: u64,
}

/// One shard: its hub and its state.
struct Shard {
    hub: ChildRef<Hub>,
    state: Arc<Mutex<ShardState>>,
    /// Requests sent to the hub and not yet handled.
    depth: IntGauge,
}

/// The handle to every room hub; cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    shards: Arc<[Shard]>,
    config: RoomConfig,
    /// Redis, when rooms span nodes.
    cluster: Option<crate::redis::Cluster>,
}

/// One line of a presence answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user.
    pub user: String,
    /// How many of the user's sessions are in the room.
    pub sessions: usize,
}

impl Rooms {
    /// A handle for `shards` hubs (at least one); registers the per-shard
    /// queue depth gauge `holdfast_rooms_shard_queue_depth{shard}`.
    ///
    /// # Errors
    /// The gauge is already registered in `registry`.
    pub fn new(
        shards: usize,
        config: RoomConfig,
        registry: &Registry,
        cluster: Option<crate::redis::Cluster>,
    ) -> prometheus::Result<Self> {
        let depth = IntGaugeVec::new(
            Opts::new(
                "holdfast_rooms_shard_queue_depth",
                "Requests waiting for a room hub shard.",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(depth.clone()))?;
        let shards = (0..shards.max(1))
            .map(|i| Shard {
                hub: ChildRef::default(),
                state: Arc::default(),
                depth: depth.with_label_values(&[&i.to_string()]),
            })
            .collect();
        Ok(Self {
            shards,
            config,
            cluster,
        })
    }

    /// The `rooms` supervisor with one hub per shard, hub `i` on `arbiters[i % len]`
    /// (its own thread), or on the supervisor's arbiter when `arbiters` is empty.
    ///
    /// `/health/rooms` carries the rooms, members and open connections.
    pub fn spec(
        &self,
        arbiters: &[ArbiterHandle],
        intensity: Intensity,
        connections: &crate::connections::Connections,
    ) -> ChildSpec<crate::supervision::Supervisor> {
        let (rooms, conns) = (self.clone(), connections.clone());
        let mut sup = SupervisorSpec::new("rooms")
            .intensity(intensity)
            .details(move || {
                let (count, members) = rooms.totals();
                let mut d = serde_json::Map::new();
                d.insert("rooms".into(), count.into());
                d.insert("members".into(), members.into());
                d.insert("connections".into(), conns.count().into());
                d.insert("shards".into(), rooms.shard_count().into());
                d
            });
        for (i, shard) in self.shards.iter().enumerate() {
            let state = shard.state.clone();
            let depth = shard.depth.clone();
            let config = self.config;
            let cluster = self.cluster.clone();
            let mut spec = ChildSpec::new(format!("rooms-{i}"), move |_| Hub {
                state: state.clone(),
                depth: depth.clone(),
                config,
                cluster: cluster.clone(),
                conn: None,
                connecting: false,
            })
            .stage(Stage::Connections)
            .bind(&shard.hub);
            if !arbiters.is_empty() {
                spec = spec.arbiter(arbiters[i % arbiters.len()].clone());
            }
            sup = sup.child(AnyChildSpec::from(spec));
        }
        sup.into_child().stage(Stage::Connections)
    }

    /// Hands a message another node announced to the hub of its room.
    pub fn announce(&self, announced: crate::redis::Announced) {
        if let Some(hub) = self.shard(&announced.room).hub.addr() {
            hub.do_send(Announce { announced });
        }
    }

    /// Asks every hub to compare its rooms with the cluster's streams.
    pub fn reconcile_all(&self) {
        for shard in self.shards.iter() {
            if let Some(hub) = shard.hub.addr() {
                hub.do_send(Reconcile);
            }
        }
    }

    /// How many shards there are.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard a room lives in.
    pub fn shard_of(&self, room: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    fn shard(&self, room: &str) -> &Shard {
        &self.shards[self.shard_of(room)]
    }

    /// Sends `msg` to the room's hub at once (so that one caller's requests
    /// keep their order) and returns the answer's future; `Unavailable`
    /// while the hub restarts.
    fn ask<M>(
        &self,
        room: &str,
        msg: M,
    ) -> impl std::future::Future<Output = Result<M::Result, RoomError>> + use<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Hub: Handler<M>,
    {
        let shard = self.shard(room);
        let depth = shard.depth.clone();
        let request = shard.hub.addr().map(|hub| {
            depth.inc();
            hub.send(msg)
        });
        async move {
            let answer = request.ok_or(RoomError::Unavailable)?.await;
            if answer.is_err() {
                depth.dec(); // never handled
            }
            answer.map_err(|_| RoomError::Unavailable)
        }
    }

    /// Adds `member` to `room`; the hub then sends it `RoomEvent::Joined`.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts.
    pub fn join(
        &self,
        room: &str,
        member: Member,
        id: Option<Value>,
    ) -> impl std::future::Future<Output = Result<(), RoomError>> + use<> {
        self.ask(
            room,
            Join {
                room: room.into(),
                member,
                id,
            },
        )
    }

    /// Removes `member` from `room` through the room's hub, after every
    /// request sent to it before (a `join` included). With `answer`, the hub
    /// then sends the member `RoomEvent::Left`; without, nothing (the
    /// connection is gone, or leaves for another reason).
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts; the member is then still in the
    /// room, until a retry or until its connection is gone (hubs drop
    /// members whose connection is gone).
    pub fn leave(
        &self,
        room: &str,
        member: Member,
        answer: Option<LeaveAnswer>,
    ) -> Result<(), RoomError> {
        let shard = self.shard(room);
        let hub = shard.hub.addr().ok_or(RoomError::Unavailable)?;
        shard.depth.inc();
        hub.do_send(Leave {
            room: room.into(),
            member,
            answer,
        });
        Ok(())
    }

    /// Publishes `data` from `user` to `room`; answers the message's offset.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts (the message was not published).
    pub fn publish(
        &self,
        room: &str,
        user: Arc<str>,
        data: Box<RawValue>,
    ) -> impl std::future::Future<Output = Result<u64, RoomError>> + use<> {
        self.ask(
            room,
            Publish {
                room: room.into(),
                user,
                data,
            },
        )
    }

    /// Who is in `room`, one line per user.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts.
    pub fn presence(
        &self,
        room: &str,
    ) -> impl std::future::Future<Output = Result<Vec<PresenceEntry>, RoomError>> + use<> {
        self.ask(room, Presence { room: room.into() })
    }

    /// Re-joins `member` to `room` and replays what followed `after`; the hub
    /// sends the messages, then `RoomEvent::Replayed`.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts.
    pub fn resume(
        &self,
        room: &str,
        member: Member,
        after: u64,
        epoch: Option<String>,
    ) -> impl std::future::Future<Output = Result<(), RoomError>> + use<> {
        self.ask(
            room,
            Resume {
                room: room.into(),
                member,
                after,
                epoch,
            },
        )
    }

    /// Every room's name, epoch and latest offset (for the shutdown checkpoint).
    pub fn checkpoint(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let state = shard.state.lock();
            for (name, room) in &state.rooms {
                if room.offset > 0 {
                    out.push((name.to_string(), room.epoch.to_string(), room.offset));
                }
            }
        }
        out
    }

    /// Restores rooms from a checkpoint taken at a graceful shutdown: their
    /// offsets continue in the same epoch. Call before the hubs take traffic.
    pub fn restore(&self, rooms: impl IntoIterator<Item = (String, String, u64)>) -> usize {
        let mut n = 0;
        for (name, epoch, offset) in rooms {
            let shard = self.shard(&name);
            let mut state = shard.state.lock();
            let room = state
                .rooms
                .entry(name.as_str().into())
                .or_insert_with(Room::new);
            room.epoch = epoch.into();
            room.offset = offset;
            n += 1;
        }
        n
    }

    /// Makes the hub of `shard` panic (chaos testing, the admin API's crash).
    pub fn crash(&self, shard: usize) {
        if let Some(hub) = self.shards.get(shard).and_then(|s| s.hub.addr()) {
            hub.do_send(Crash);
        }
    }

    /// Rooms and members over every shard (read from the shared state).
    pub fn totals(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(r, m), s| {
            let st = s.state.lock();
            (
                r + st.rooms.len(),
                m + st.rooms.values().map(|x| x.members.len()).sum::<usize>(),
            )
        })
    }
}

/// A room hub. See the module docs.
pub struct Hub {
    /// This shard's rooms; outlives the hub.
    state: Arc<Mutex<ShardState>>,
    /// Requests waiting for this hub.
    depth: IntGauge,
    config: RoomConfig,
    /// Redis, when rooms span nodes.
    cluster: Option<crate::redis::Cluster>,
    /// One connection for all of this hub's publishes, so that Redis runs
    /// them in the order the hub received them.
    conn: Option<redis::aio::MultiplexedConnection>,
    /// Whether `conn` is being obtained.
    connecting: bool,
}

/// How often a hub compares its rooms with the cluster's streams.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

impl Hub {
    /// The cluster, when it answers.
    fn live_cluster(&self) -> Option<crate::redis::Cluster> {
        self.cluster.clone().filter(crate::redis::Cluster::is_up)
    }

    fn ensure_conn(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if self.conn.is_some() || self.connecting {
            return;
        }
        self.connecting = true;
        ctx.spawn(
            async move { cluster.connection().await }
                .into_actor(self)
                .map(|r, act, _| {
                    act.connecting = false;
                    act.conn = r.ok();
                }),
        );
    }

    /// Applies a cluster message in offset order: duplicates are dropped,
    /// messages ahead of a gap are held while the gap is read from the stream.
    fn apply(
        &mut self,
        ctx: &mut Context<Self>,
        room: Arc<str>,
        epoch: Arc<str>,
        n: u64,
        frame: ByteString,
        at: Option<Instant>,
    ) {
        let config = self.config;
        let fill_from = {
            let mut state = self.state.lock();
            let r = state.rooms.entry(room.clone()).or_insert_with(Room::new);
            if !r.synced || r.epoch != epoch {
                r.sync(epoch, n.saturating_sub(1));
            }
            if n <= r.offset {
                return; // a duplicate (e.g. our own publish, announced back)
            }
            if n > r.offset + 1 {
                r.held.insert(n, (frame, at));
                if r.filling {
                    return;
                }
                r.filling = true;
                Some((r.offset + 1, n - 1))
            } else {
                r.deliver(&room, n, frame, at, &config);
                while let Some((f, at)) = r.held.remove(&(r.offset + 1)) {
                    let next = r.offset + 1;
                    r.deliver(&room, next, f, at, &config);
                }
                None
            }
        };
        if let Some((from, to)) = fill_from {
            self.fill(ctx, room, from, to);
        }
    }

    /// Reads `from..=to` of a room's stream and applies it.
    fn fill(&mut self, ctx: &mut Context<Self>, room: Arc<str>, from: u64, to: u64) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let name = room.clone();
        ctx.spawn(async move { cluster.range(&name, from, to).await }.into_actor(self).map(move |range, act, ctx| {
            if let Some(r) = act.state.lock().rooms.get_mut(&room) {
                r.filling = false;
            }
            let Ok(range) = range else { return }; // retried by the next reconcile
            for (offset, frame) in range.entries {
                act.apply(ctx, room.clone(), range.epoch.clone(), offset, frame, None);
            }
            // What the stream no longer holds (trimmed, or Redis lost it) is skipped.
            let config = act.config;
            let mut state = act.state.lock();
            if let Some(r) = state.rooms.get_mut(&room) {
                if let Some((&first, _)) = r.held.iter().next() {
                    if first > r.offset + 1 && !r.filling {
                        warn!(room = %room, from = r.offset + 1, to = first - 1, "messages missing from the stream; skipped");
                        r.offset = first - 1;
                        while let Some((f, at)) = r.held.remove(&(r.offset + 1)) {
                            let next = r.offset + 1;
                            r.deliver(&room, next, f, at, &config);
                        }
                    }
                }
            }
        }));
    }

    /// Local publish: the offset is this node's (Redis absent or down).
    fn publish_local(&mut self, msg: Publish) -> u64 {
        let config = self.config;
        let mut state = self.state.lock();
        state.published += 1;
        let room = state
            .rooms
            .entry(msg.room.clone())
            .or_insert_with(Room::new);
        if room.synced {
            // Redis is down: offsets can no longer be global, so the room
            // moves to a node-local epoch (they keep increasing).
            room.synced = false;
            room.epoch = new_epoch().into();
            room.history.clear();
            room.held.clear();
            warn!(room = %msg.room, "redis down: room continues on a node-local epoch");
        }
        // Everything that could fail happens before the room changes.
        let offset = room.offset + 1;
        let frame = message_frame(&msg.room, offset, &msg.user, &msg.data);
        room.deliver(&msg.room, offset, frame, Some(Instant::now()), &config);
        offset
    }

    fn join_now(&mut self, msg: Join) {
        let mut state = self.state.lock();
        let room = state
            .rooms
            .entry(msg.room.clone())
            .or_insert_with(Room::new);
        msg.member.inbox.send(RoomEvent::Joined {
            room: msg.room,
            offset: room.offset,
            epoch: room.epoch.clone(),
            id: msg.id,
        });
        room.add(msg.member);
    }

    /// Replays to a resuming member: from the cluster's stream when given,
    /// then from local history; then it joins.
    fn resume_now(&mut self, msg: Resume, range: Option<crate::redis::Range>) {
        let now = Instant::now();
        let config = self.config;
        let mut state = self.state.lock();
        let room = state
            .rooms
            .entry(msg.room.clone())
            .or_insert_with(Room::new);
        if let Some(r) = range.as_ref().filter(|r| !r.epoch.is_empty()) {
            room.sync(r.epoch.clone(), r.latest.max(room.offset));
        }
        room.prune(&config, now);
        let to = &msg.member.inbox;
        let same_epoch = msg.epoch.as_deref().is_none_or(|e| e == &*room.epoch);
        let mut replayed = 0;
        let complete = if !same_epoch || msg.after > room.offset {
            false // offsets restarted since the client's view: nothing to replay safely
        } else if msg.after == room.offset {
            true
        } else {
            let mut sent = msg.after;
            let complete = match range.as_ref().filter(|r| r.epoch == room.epoch) {
                Some(r) => {
                    for (offset, frame) in &r.entries {
                        if *offset > sent {
                            to.send(RoomEvent::Message {
                                room: msg.room.clone(),
                                offset: *offset,
                                frame: frame.clone(),
                                published_at: None,
                            });
                            sent = *offset;
                            replayed += 1;
                        }
                    }
                    r.oldest > 0 && r.oldest <= msg.after + 1
                }
                None => room
                    .history
                    .front()
                    .is_some_and(|e| e.offset <= msg.after + 1),
            };
            // Messages this node applied after the stream was read.
            for entry in &room.history {
                if entry.offset > sent {
                    to.send(RoomEvent::Message {
                        room: msg.room.clone(),
                        offset: entry.offset,
                        frame: entry.frame.clone(),
                        published_at: None,
                    });
                    sent = entry.offset;
                    replayed += 1;
                }
            }
            complete
        };
        to.send(RoomEvent::Replayed {
            room: msg.room.clone(),
            replayed,
            complete,
            epoch: room.epoch.clone(),
            offset: room.offset,
        });
        room.add(msg.member);
    }

    /// Drops members whose connection is gone without a `Leave` (it crashed,
    /// or left while this hub was down).
    fn prune(&mut self) {
        let mut state = self.state.lock();
        let now = Instant::now();
        for room in state.rooms.values_mut() {
            room.retain_connected();
            room.prune(&self.config, now);
        }
        state
            .rooms
            .retain(|_, r| !(r.members.is_empty() && r.history.is_empty()));
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    /// Prunes stale members now and every `PRUNE_INTERVAL`. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
        self.prune();
        ctx.run_interval(PRUNE_INTERVAL, |hub, _| hub.prune());
        if self.cluster.is_some() {
            self.ensure_conn(ctx);
            ctx.run_interval(RECONCILE_INTERVAL, |hub, ctx| hub.reconcile(ctx));
        }
    }
}

impl Child for Hub {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let state = self.state.lock();
        let members: usize = state.rooms.values().map(|r| r.members.len()).sum();
        Health::healthy()
            .with("rooms", state.rooms.len())
            .with("members", members)
            .with("published", state.published)
            .with("queue_depth", self.depth.get())
            .into()
    }
}

/// Join a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The room.
    pub room: Arc<str>,
    /// Who joins.
    pub member: Member,
    /// The request id, echoed in `Joined`.
    pub id: Option<Value>,
}

impl Handler<Join> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        self.depth.dec();
        let synced = self
            .state
            .lock()
            .rooms
            .get(&msg.room)
            .is_some_and(|r| r.synced);
        match self.live_cluster() {
            // A room this node does not follow yet: learn its epoch and
            // offset first. The hub waits (handles nothing else) meanwhile,
            // so that a `Leave` sent behind this join applies after it.
            Some(cluster) if !synced => {
                let room = msg.room.clone();
                ctx.wait(
                    async move { cluster.head(&room).await }
                        .into_actor(self)
                        .map(move |head, act, _| {
                            if let Ok((epoch, latest)) = head {
                                let mut state = act.state.lock();
                                let r = state
                                    .rooms
                                    .entry(msg.room.clone())
                                    .or_insert_with(Room::new);
                                r.sync(epoch, latest);
                            }
                            act.join_now(msg);
                        }),
                );
            }
            _ => self.join_now(msg),
        }
    }
}

/// Leave a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The room.
    pub room: Arc<str>,
    /// Who leaves: removed only if its session is in the room through this
    /// very connection.
    pub member: Member,
    /// Whether, and with which id, to answer `RoomEvent::Left`.
    pub answer: Option<LeaveAnswer>,
}

/// A leave the client asked for, to be answered.
#[derive(Debug, Clone)]
pub struct LeaveAnswer {
    /// The request id to echo.
    pub id: Option<Value>,
}

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.depth.dec();
        let mut state = self.state.lock();
        if let Some(r) = state.rooms.get_mut(&msg.room) {
            r.remove_member(&msg.member);
            if r.members.is_empty() && r.history.is_empty() {
                state.rooms.remove(&msg.room);
            }
        }
        if let Some(LeaveAnswer { id }) = msg.answer {
            msg.member
                .inbox
                .send(RoomEvent::Left { room: msg.room, id });
        }
    }
}

/// Publish a message; answers its offset.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// The publisher's user id.
    pub user: Arc<str>,
    /// The message body, as the client sent it.
    pub data: Box<RawValue>,
}

/// The one encoder of the `message` frame (PROTOCOL.md): built once per
/// publish, and every member on every node gets these bytes.
pub fn message_frame(room: &str, offset: u64, user: &str, data: &RawValue) -> ByteString {
    let room = serde_json::to_string(room).unwrap_or_default();
    let user = serde_json::to_string(user).unwrap_or_default();
    let data = data.get();
    let mut s = String::with_capacity(48 + room.len() + user.len() + data.len());
    s.push_str(r#"{"type":"message","room":"#);
    s.push_str(&room);
    s.push_str(r#","offset":"#);
    s.push_str(itoa::Buffer::new().format(offset));
    s.push_str(r#","from":"#);
    s.push_str(&user);
    s.push_str(r#","data":"#);
    s.push_str(data);
    s.push('}');
    ByteString::from(s)
}

impl Handler<Publish> for Hub {
    type Result = ResponseActFuture<Self, u64>;

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) -> Self::Result {
        self.depth.dec();
        match (self.live_cluster(), self.conn.clone()) {
            (Some(cluster), Some(mut conn)) => Box::pin(
                async move {
                    let result = cluster
                        .publish(&mut conn, &msg.room, &msg.user, &msg.data)
                        .await;
                    (msg, result)
                }
                .into_actor(self)
                .map(|(msg, result), act, ctx| match result {
                    Ok((epoch, offset, frame)) => {
                        act.state.lock().published += 1;
                        act.apply(ctx, msg.room, epoch, offset, frame, Some(Instant::now()));
                        offset
                    }
                    Err(_) => {
                        act.conn = None;
                        act.publish_local(msg)
                    }
                }),
            ),
            (cluster, _) => {
                if cluster.is_some() {
                    self.ensure_conn(ctx);
                }
                Box::pin(actix::fut::ready(self.publish_local(msg)))
            }
        }
    }
}

/// A message another node published, from the Pub/Sub relay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Announce {
    /// The message.
    pub announced: crate::redis::Announced,
}

impl Handler<Announce> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Announce, ctx: &mut Context<Self>) {
        let a = msg.announced;
        let followed = self
            .state
            .lock()
            .rooms
            .get(&a.room)
            .is_some_and(|r| !r.members.is_empty());
        if followed {
            self.apply(ctx, a.room, a.epoch, a.offset, a.frame, None);
        }
    }
}

/// Compare every followed room with the cluster's counters and fill gaps.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile;

impl Handler<Reconcile> for Hub {
    type Result = ();

    fn handle(&mut self, _: Reconcile, ctx: &mut Context<Self>) {
        self.reconcile(ctx);
    }
}

impl Hub {
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.live_cluster() else {
            return;
        };
        if self.conn.is_none() {
            self.ensure_conn(ctx);
        }
        let followed: Vec<Arc<str>> = self
            .state
            .lock()
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty() && !r.filling)
            .map(|(name, _)| name.clone())
            .collect();
        for room in followed {
            let cluster = cluster.clone();
            let name = room.clone();
            ctx.spawn(
                async move { cluster.head(&name).await }
                    .into_actor(self)
                    .map(move |head, act, ctx| {
                        let Ok((epoch, latest)) = head else { return };
                        let gap = {
                            let mut state = act.state.lock();
                            let Some(r) = state.rooms.get_mut(&room) else {
                                return;
                            };
                            if !r.synced || r.epoch != epoch {
                                r.sync(epoch, latest); // the cluster's epoch wins
                                None
                            } else if latest > r.offset && !r.filling {
                                r.filling = true;
                                Some((r.offset + 1, latest))
                            } else {
                                None
                            }
                        };
                        if let Some((from, to)) = gap {
                            act.fill(ctx, room, from, to);
                        }
                    }),
            );
        }
    }
}

/// Who is in a room.
#[derive(Message)]
#[rtype(result = "Vec<PresenceEntry>")]
pub struct Presence {
    /// The room.
    pub room: Arc<str>,
}

impl Handler<Presence> for Hub {
    type Result = MessageResult<Presence>;

    fn handle(&mut self, msg: Presence, _ctx: &mut Context<Self>) -> Self::Result {
        self.depth.dec();
        let state = self.state.lock();
        let mut by_user: HashMap<&str, usize> = HashMap::new();
        if let Some(room) = state.rooms.get(&msg.room) {
            for m in room.members.values() {
                *by_user.entry(&m.user).or_default() += 1;
            }
        }
        let mut list: Vec<PresenceEntry> = by_user
            .into_iter()
            .map(|(user, sessions)| PresenceEntry {
                user: user.to_owned(),
                sessions,
            })
            .collect();
        list.sort_by(|a, b| a.user.cmp(&b.user));
        MessageResult(list)
    }
}

/// Re-join a room and replay what followed an offset.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resume {
    /// The room.
    pub room: Arc<str>,
    /// Who resumes.
    pub member: Member,
    /// The last offset the client saw.
    pub after: u64,
    /// The epoch the client saw, if it sent one.
    pub epoch: Option<String>,
}

impl Handler<Resume> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        self.depth.dec();
        match self.live_cluster() {
            Some(cluster) => {
                let (room, after) = (msg.room.clone(), msg.after);
                // Waits, as a join does, so that a `Leave` behind it applies after it.
                ctx.wait(
                    async move { cluster.range(&room, after + 1, u64::MAX).await }
                        .into_actor(self)
                        .map(move |range, act, _| act.resume_now(msg, range.ok())),
                );
            }
            None => self.resume_now(msg, None),
        }
    }
}

/// Makes the hub panic: chaos testing of supervision.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for Hub {
    type Result = ();

    fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("room hub crash requested (chaos)");
    }
}
