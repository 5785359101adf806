//! The [`Rooms`] handle and the messages its hubs answer.
//!
//! The handle routes each request to the hub of the room's shard (a room
//! lives in the shard its name hashes to) and turns a hub that is down into
//! [`RoomError::Unavailable`]. Requests from one caller keep their order:
//! each is put in the hub's mailbox when it is made.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use parking_lot::Mutex;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::value::RawValue;

use super::HistoryMessage;
use serde_json::Value;

use super::broker::{Broker, Inbound, Local, Position, Publication, Reply};
use super::hub::{Hub, ShardState};
use super::outlet::Member;
use super::room::RoomConfig;
use super::{PresenceEntry, RoomError};
use crate::backoff::Backoff;
use crate::shutdown::Stage;
use crate::supervision::{AnyChildSpec, ChildRef, ChildSpec, Intensity, SupervisorSpec};

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
    /// Where offsets come from: this node alone, or shared with others.
    broker: Arc<dyn Broker>,
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
        broker: Option<Arc<dyn Broker>>,
    ) -> prometheus::Result<Self> {
        let depth = IntGaugeVec::new(
            Opts::new(
                "holdfast_rooms_shard_queue_depth",
                "Requests waiting for a room hub shard.",
            ),
            &["shard"],
        )?;
        registry.register(Box::new(depth.clone()))?;
        let shards: Arc<[Shard]> = (0..shards.max(1))
            .map(|i| Shard {
                hub: ChildRef::default(),
                state: Arc::new(Mutex::new(ShardState::new(config.clone()))),
                depth: depth.with_label_values(&[&i.to_string()]),
            })
            .collect();
        let broker = broker.unwrap_or_else(|| Arc::new(Local));
        broker.attach(Arc::new(Router {
            shards: Arc::downgrade(&shards),
        }));
        Ok(Self {
            shards,
            config,
            broker,
        })
    }

    /// The `rooms` supervisor with one hub per shard, hub `i` on `arbiters[i % len]`
    /// (its own thread), or on the supervisor's arbiter when `arbiters` is empty;
    /// each hub restarts with `backoff` (supervision's, as every actor).
    ///
    /// `/health/rooms` carries the rooms, members and open connections.
    pub fn spec(
        &self,
        arbiters: &[ArbiterHandle],
        intensity: Intensity,
        backoff: Backoff,
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
            let config = self.config.clone();
            let broker = self.broker.clone();
            let me = shard.hub.clone();
            let mut spec = ChildSpec::new(format!("rooms-{i}"), move |_| Hub {
                me: me.clone(),
                state: state.clone(),
                depth: depth.clone(),
                config: config.clone(),
                broker: broker.clone(),
            })
            .stage(Stage::Connections)
            .backoff(backoff)
            .bind(&shard.hub);
            if !arbiters.is_empty() {
                spec = spec.arbiter(arbiters[i % arbiters.len()].clone());
            }
            sup = sup.child(AnyChildSpec::from(spec));
        }
        sup.into_child().stage(Stage::Connections)
    }

    /// How many shards there are.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard a room lives in.
    pub fn shard_of(&self, room: &str) -> usize {
        shard_of(&self.shards, room)
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

    /// Adds `member` to `room`; the hub then sends it `RoomEvent::Joined`
    /// with `answer`.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts.
    pub fn join(
        &self,
        room: &str,
        member: Member,
        answer: JoinAnswer,
    ) -> impl std::future::Future<Output = Result<(), RoomError>> + use<> {
        self.ask(
            room,
            Join {
                room: room.into(),
                member,
                answer,
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

    /// Publishes `data` from `user` to `room`; answers the message's
    /// position (its offset, and the epoch the offset belongs to). The
    /// hub's spans are children of the current span, if it is traced.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts: the message was not published.
    /// (A hub that crashes while a shared broker stores the message does
    /// not lose the answer: the message is acknowledged once stored.)
    pub fn publish(
        &self,
        room: &str,
        user: Arc<str>,
        data: Box<RawValue>,
    ) -> impl std::future::Future<Output = Result<Position, RoomError>> + use<> {
        let asked = self.ask(
            room,
            Publish {
                room: room.into(),
                user,
                data,
                trace: tracing::Span::current(),
            },
        );
        async move { asked.await? }
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

    /// The messages of `room` after offset `since`, oldest first, at most
    /// `limit`, from the shared broker's history when there is one, else
    /// this node's. Membership is not needed.
    ///
    /// # Errors
    /// `Unavailable` while the hub restarts.
    pub fn history(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<HistoryPage, RoomError>> + use<> {
        self.ask(
            room,
            ReadHistory {
                room: room.into(),
                since,
                limit,
            },
        )
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

    /// Resolves once every hub has handled what was sent to it before, so
    /// that every publish accepted until now has been handed to its
    /// members' outlets (a hub that is down answers at once). With a
    /// broker that answers later, its publishes may still be on their way;
    /// they are in its history.
    pub fn flushed(&self) -> impl std::future::Future<Output = ()> + use<> {
        let sends: Vec<_> = self
            .shards
            .iter()
            .filter_map(|s| s.hub.addr())
            .map(|hub| hub.send(super::hub::Flush))
            .collect();
        async move {
            for sent in sends {
                let _ = sent.await;
            }
        }
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

    /// The rooms whose names start with `prefix`, sorted by name, at most
    /// `limit`: name, member sessions, latest offset, epoch. With a shared
    /// broker that answers, the cluster's rooms with members on some node
    /// (members counted on every node); otherwise this node's rooms (with
    /// members or history here), read from the shards' state, so that it
    /// answers while a hub restarts.
    pub fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> impl std::future::Future<Output = RoomList> + use<> {
        let asked = self.broker.rooms(prefix, limit);
        let here = self.clone();
        let prefix = prefix.to_owned();
        async move {
            let answer = match asked {
                Reply::Now(Ok(Some(rooms))) => Some(rooms),
                Reply::Now(Ok(None) | Err(_)) => None, // node-local, or the broker is down
                Reply::Later(later) => later.await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "listing the cluster's rooms failed; listing this node's");
                    None
                }),
            };
            match answer {
                Some(rooms) => RoomList {
                    rooms,
                    cluster: true,
                },
                None => here.list_here(&prefix, limit),
            }
        }
    }

    /// This node's rooms, as [`Rooms::list`] without a shared broker.
    fn list_here(&self, prefix: &str, limit: usize) -> RoomList {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let state = shard.state.lock();
            out.extend(
                state
                    .rooms
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, room)| RoomSummary {
                        room: name.to_string(),
                        members: room.members.len(),
                        offset: room.offset,
                        epoch: room.epoch.to_string(),
                    }),
            );
        }
        out.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        out.truncate(limit);
        RoomList {
            rooms: out,
            cluster: false,
        }
    }

    /// Restores rooms from a checkpoint taken at a graceful shutdown: their
    /// offsets continue in the same epoch. Each is kept for `keep` (the
    /// session TTL: as long as a session may come back to resume into it)
    /// even with neither members nor history, which would otherwise let the
    /// next prune forget it and its epoch. Call before the hubs take traffic.
    pub fn restore(
        &self,
        rooms: impl IntoIterator<Item = (String, String, u64)>,
        keep: std::time::Duration,
    ) -> usize {
        let until = std::time::Instant::now() + keep;
        let mut n = 0;
        for (name, epoch, offset) in rooms {
            let shard = self.shard(&name);
            let mut state = shard.state.lock();
            let room = state.room(&name.as_str().into());
            room.epoch = epoch.into();
            room.offset = offset;
            room.kept_until = Some(until);
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

/// The hub of a room's shard, by name.
fn shard_of(shards: &[Shard], room: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    room.hash(&mut h);
    (h.finish() % shards.len() as u64) as usize
}

/// What a shared broker hands the rooms: another node's publications go to
/// the hub of their room, a resync to every hub. Holds the shards weakly,
/// since the broker outlives no `Rooms` handle.
struct Router {
    shards: Weak<[Shard]>,
}

impl Inbound for Router {
    fn publication(&self, publication: Publication) {
        let Some(shards) = self.shards.upgrade() else {
            return;
        };
        if let Some(hub) = shards[shard_of(&shards, &publication.room)].hub.addr() {
            hub.do_send(Announce { publication });
        }
    }

    fn presence_changed(&self, room: &str) {
        let Some(shards) = self.shards.upgrade() else {
            return;
        };
        if let Some(hub) = shards[shard_of(&shards, room)].hub.addr() {
            hub.do_send(PresenceChanged { room: room.into() });
        }
    }

    fn resync(&self) {
        let Some(shards) = self.shards.upgrade() else {
            return;
        };
        for shard in shards.iter() {
            if let Some(hub) = shard.hub.addr() {
                hub.do_send(Reconcile);
            }
        }
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
    /// What `Joined` echoes.
    pub answer: JoinAnswer,
}

/// What the answer to a join carries back to the member, untouched.
#[derive(Debug, Clone, Default)]
pub struct JoinAnswer {
    /// The request id to echo.
    pub id: Option<Value>,
    /// What the room's handler answered with the join, if anything.
    pub data: Option<Box<RawValue>>,
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

/// Publish a message; answers its position, or `Unavailable` when it was
/// not published.
#[derive(Message)]
#[rtype(result = "Result<Position, RoomError>")]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// The publisher's user id.
    pub user: Arc<str>,
    /// The message body, as the client sent it.
    pub data: Box<RawValue>,
    /// The publisher's span (the hub's spans are its children).
    pub trace: tracing::Span,
}

/// Who is in a room.
#[derive(Message)]
#[rtype(result = "Vec<PresenceEntry>")]
pub struct Presence {
    /// The room.
    pub room: Arc<str>,
}

/// What [`Rooms::list`] answers.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RoomList {
    /// The rooms, by name.
    pub rooms: Vec<RoomSummary>,
    /// Whether they are the cluster's (a shared broker answered), not only
    /// this node's.
    pub cluster: bool,
}

/// One room as [`Rooms::list`] shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub room: String,
    /// Member sessions (on every node, in a cluster's list).
    pub members: usize,
    /// The latest offset.
    pub offset: u64,
    /// The epoch.
    pub epoch: String,
}

/// Read a room's history.
#[derive(Message)]
#[rtype(result = "HistoryPage")]
pub struct ReadHistory {
    /// The room.
    pub room: Arc<str>,
    /// Messages after this offset.
    pub since: u64,
    /// At most this many.
    pub limit: usize,
}

/// What history holds of a room after an offset.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The room's epoch: the offsets' meaning.
    pub epoch: Arc<str>,
    /// Oldest first.
    pub messages: Vec<HistoryMessage>,
    /// Whether history reached back to `since + 1`.
    pub complete: bool,
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

/// Another node's publication, from the shared broker.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Announce {
    pub(crate) publication: Publication,
}

/// Compare every followed room with the shared broker and fill gaps.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Reconcile;

/// Another node's members of a room changed (presence events).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PresenceChanged {
    pub(crate) room: Arc<str>,
}

/// Makes the hub panic: chaos testing of supervision.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;
