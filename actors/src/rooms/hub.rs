//! The room hub: one actor per shard, the sole writer of its shard's rooms.
//!
//! Every change to a room (join, leave, publish, resume, another node's
//! publication, a prune) is a message to its hub, handled one at a time, so
//! that one client's requests apply in the order it sent them. The shard's
//! state lives outside the hub ([`ShardState`], handed to every incarnation
//! by its factory) so that a crash loses no membership, offset, epoch or
//! history; it is read from outside only for totals and the shutdown
//! checkpoint.
//!
//! With a shared broker, a hub that must ask the broker before answering a
//! `join` (a room this node does not follow yet) or a `resume` (the stream
//! holds the history) waits for the answer before it handles anything else,
//! so that a `leave` sent behind either applies after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use parking_lot::Mutex;
use prometheus::IntGauge;
use tracing::warn;

use super::broker::{
    Arrival, Broker, BrokerFuture, Filled, History, Membership, Position, Read, Reply,
};
use super::handle::{
    Announce, Crash, HistoryPage, Join, Leave, LeaveAnswer, Presence, PresenceChanged, Publish,
    ReadHistory, Reconcile, Resume,
};
use super::outlet::RoomEvent;
use super::room::{Room, RoomConfig};
use super::HistoryMessage;
use super::{message_frame, PresenceEntry};
use crate::health::{Health, HealthReply};
use crate::supervision::{Child, ChildRef};
use crate::trace;

mod publish;

use publish::delivering;

/// How often a hub drops members whose connection is gone without a `Leave`.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// How often a hub compares its rooms with a shared broker's positions.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);
/// Mailbox capacity of a hub; `send` waits past it (back-pressure on publishers).
const HUB_MAILBOX: usize = 4096;

/// A shard's state, shared by every incarnation of its hub.
pub(super) struct ShardState {
    /// The shard's rooms by name.
    pub(super) rooms: HashMap<Arc<str>, Room>,
    /// Messages published through this shard.
    pub(super) published: u64,
    /// What a new room's options are.
    config: RoomConfig,
}

impl ShardState {
    pub(super) fn new(config: RoomConfig) -> Self {
        Self {
            rooms: HashMap::new(),
            published: 0,
            config,
        }
    }

    /// The room `name`, created with its options if new.
    pub(super) fn room(&mut self, name: &Arc<str>) -> &mut Room {
        let config = &self.config;
        self.rooms
            .entry(name.clone())
            .or_insert_with(|| Room::new(name, config))
    }
}

/// A room hub. See the module docs.
pub(super) struct Hub {
    /// The shard's hub, whichever incarnation runs: where a store that
    /// outlived this one is applied.
    pub(super) me: ChildRef<Hub>,
    /// This shard's rooms; outlives the hub.
    pub(super) state: Arc<Mutex<ShardState>>,
    /// Requests waiting for this hub.
    pub(super) depth: IntGauge,
    pub(super) config: RoomConfig,
    /// Where offsets come from and history is kept.
    pub(super) broker: Arc<dyn Broker>,
}

impl Hub {
    /// Whether the broker is shared and answers now.
    fn shared_up(&self) -> bool {
        self.broker.shared() && self.broker.is_up()
    }

    /// Puts a publication into its room's offset order: duplicates are
    /// dropped, one ahead of a gap is held while the gap is read.
    fn apply(
        &mut self,
        ctx: &mut Context<Self>,
        room: Arc<str>,
        position: Position,
        frame: ByteString,
        at: Option<Instant>,
    ) {
        let gap = {
            let mut state = self.state.lock();
            let r = state.room(&room);
            if !r.sequence.synced || r.epoch != position.epoch {
                r.sync(
                    &room,
                    Position {
                        epoch: position.epoch.clone(),
                        offset: position.offset.saturating_sub(1),
                    },
                );
            }
            match r.sequence.arrive(r.offset, position.offset, frame, at) {
                Arrival::Duplicate => None,
                Arrival::Ready(ready) => {
                    for (offset, frame, at) in ready {
                        r.deliver(&room, offset, frame, at);
                    }
                    None
                }
                Arrival::Gap(gap) => gap,
            }
        };
        if let Some(read) = gap {
            self.fill(ctx, room, read);
        }
    }

    /// Makes `read` of a room's history and applies what it finds, if it is
    /// still the room's current read when it answers (see [`Read`]).
    fn fill(&mut self, ctx: &mut Context<Self>, room: Arc<str>, read: Read) {
        let answer: BrokerFuture<Option<History>> =
            match self.broker.history(&room, read.from, read.to) {
                Reply::Now(result) => Box::pin(async move { result }),
                Reply::Later(fut) => fut,
            };
        ctx.spawn(answer.into_actor(self).map(move |answer, act, ctx| {
            let epoch = {
                let mut state = act.state.lock();
                let Some(r) = state.rooms.get_mut(&room) else {
                    return;
                };
                if !r.sequence.answered(read) {
                    return; // stale: the room changed epoch since
                }
                r.epoch.clone()
            };
            // A failed read is retried by the next reconcile; one of an
            // epoch the room is not in (the broker's changed since) too,
            // once the reconcile has adopted it.
            let Ok(Some(History { head, entries, .. })) = answer else {
                return;
            };
            if head.epoch != epoch {
                return;
            }
            for (offset, frame) in entries {
                let position = Position {
                    epoch: head.epoch.clone(),
                    offset,
                };
                act.apply(ctx, room.clone(), position, frame, None);
            }
            let gap = {
                let mut state = act.state.lock();
                let Some(r) = state.rooms.get_mut(&room) else {
                    return;
                };
                let Filled {
                    latest,
                    skipped,
                    ready,
                    gap,
                } = r.sequence.filled(r.offset, read);
                if let Some((from, to)) = skipped {
                    warn!(room = %room, from, to, "messages no longer in the broker's history; skipped");
                }
                r.offset = latest;
                for (offset, frame, at) in ready {
                    r.deliver(&room, offset, frame, at);
                }
                gap
            };
            if let Some(read) = gap {
                act.fill(ctx, room, read);
            }
        }));
    }

    /// Compares every followed room with the broker and fills the gaps.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if !self.shared_up() {
            return;
        }
        let followed: Vec<(Arc<str>, Position)> = self
            .state
            .lock()
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty() && !r.sequence.is_reading())
            .map(|(name, r)| (name.clone(), r.position()))
            .collect();
        for (room, here) in followed {
            let Reply::Later(head) = self.broker.head(&room, &here) else {
                continue;
            };
            ctx.spawn(head.into_actor(self).map(move |head, act, ctx| {
                let Ok(head) = head else { return };
                let gap = {
                    let mut state = act.state.lock();
                    let Some(r) = state.rooms.get_mut(&room) else {
                        return;
                    };
                    if !r.sequence.synced || r.epoch != head.epoch {
                        r.sync(&room, head.clone()); // the broker's epoch wins
                    }
                    (head.offset > r.offset)
                        .then(|| r.sequence.read(r.offset + 1, head.offset))
                        .flatten()
                };
                if let Some(read) = gap {
                    act.fill(ctx, room, read);
                }
            }));
        }
    }

    /// A publish the broker did not take (it is down): the room continues on
    /// a node-local epoch, its offsets still increasing.
    fn publish_local(&mut self, msg: &Publish) -> Position {
        let mut state = self.state.lock();
        state.published += 1;
        let room = state.room(&msg.room);
        if room.sequence.synced {
            room.unsync(&msg.room);
            warn!(room = %msg.room, "broker down: room continues on a node-local epoch");
        }
        // As the local broker assigns it. Everything that could fail
        // happens before the room changes.
        let offset = room.offset + 1;
        let frame = message_frame(&msg.room, offset, &msg.user, &msg.data);
        let _delivering = delivering(msg, offset, room.members.len()).entered();
        room.deliver(&msg.room, offset, frame, Some(Instant::now()));
        Position {
            epoch: room.epoch.clone(),
            offset,
        }
    }

    fn join_now(&mut self, ctx: &mut Context<Self>, msg: Join) {
        let joined = Membership::Joined {
            session: msg.member.session.clone(),
            user: msg.member.user.clone(),
        };
        {
            let mut state = self.state.lock();
            let room = state.room(&msg.room);
            msg.member.inbox.send(RoomEvent::Joined {
                room: msg.room.clone(),
                offset: room.offset,
                epoch: room.epoch.clone(),
                answer: msg.answer,
            });
            room.add(msg.member);
        }
        self.tell_members(ctx, &msg.room, joined);
    }

    /// Hands a change of this node's members to the broker, ahead of any
    /// presence read this hub makes afterwards (futures spawned into the
    /// hub's context run in the order they were spawned).
    fn tell_members(&mut self, ctx: &mut Context<Self>, room: &str, change: Membership) {
        if let Some(told) = self.broker.members(room, change) {
            ctx.spawn(told.into_actor(self).map(|result, _, _| {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "presence change not stored; the next refresh repairs it");
                }
            }));
        }
    }

    /// Tells the members of every room whose presence changed since the
    /// last batch who appeared and disappeared: from the cluster's presence
    /// with a shared broker that answers, this node's members otherwise.
    fn announce_presence(&mut self, ctx: &mut Context<Self>) {
        let dirty: Vec<Arc<str>> = self
            .state
            .lock()
            .rooms
            .iter()
            .filter(|(_, r)| r.presence.as_ref().is_some_and(|t| t.dirty))
            .map(|(name, _)| name.clone())
            .collect();
        for room in dirty {
            match self.broker.presence_elsewhere(&room) {
                Reply::Later(read) => {
                    ctx.spawn(read.into_actor(self).map(move |read, act, _| {
                        let mut state = act.state.lock();
                        let Some(r) = state.rooms.get_mut(&room) else {
                            return;
                        };
                        match read {
                            Ok(Some(elsewhere)) => {
                                // The other nodes' members, and this node's as it has them now.
                                let now = r.presence_with(elsewhere);
                                r.announce_presence(&room, &now);
                            }
                            // Not read: the next batch tries again.
                            _ => {
                                if let Some(t) = &mut r.presence {
                                    t.changed();
                                }
                            }
                        }
                    }));
                }
                Reply::Now(_) => {
                    let mut state = self.state.lock();
                    if let Some(r) = state.rooms.get_mut(&room) {
                        let now = r.presence();
                        r.announce_presence(&room, &now);
                    }
                }
            }
        }
    }

    /// Hands the broker every room's members on this node, renewing their
    /// expiry in the cluster's presence; rooms with presence events are
    /// read again at the next batch (a node that died without a goodbye
    /// leaves presence by expiry, with no word to anyone).
    fn refresh_members(&mut self, ctx: &mut Context<Self>) {
        for room in self.state.lock().rooms.values_mut() {
            if let Some(t) = &mut room.presence {
                t.changed();
            }
        }
        let rooms: Vec<(Arc<str>, Membership)> = self
            .state
            .lock()
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(name, r)| {
                let members = r
                    .members
                    .values()
                    .map(|m| (m.session.clone(), m.user.clone()))
                    .collect();
                (name.clone(), Membership::All(members))
            })
            .collect();
        for (room, all) in rooms {
            self.tell_members(ctx, &room, all);
        }
    }

    /// Replays to a resuming member: from the broker's history when given,
    /// then from local history; then it joins.
    fn resume_now(&mut self, ctx: &mut Context<Self>, msg: Resume, history: Option<History>) {
        let joined = Membership::Joined {
            session: msg.member.session.clone(),
            user: msg.member.user.clone(),
        };
        let name = msg.room.clone();
        self.replay(msg, history);
        self.tell_members(ctx, &name, joined);
    }

    fn replay(&mut self, msg: Resume, history: Option<History>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let room = state.room(&msg.room);
        if let Some(h) = history.as_ref().filter(|h| !h.head.epoch.is_empty()) {
            let offset = h.head.offset.max(room.offset);
            room.sync(
                &msg.room,
                Position {
                    epoch: h.head.epoch.clone(),
                    offset,
                },
            );
        }
        room.prune(now);
        let to = &msg.member.inbox;
        let same_epoch = msg.epoch.as_deref().is_none_or(|e| e == &*room.epoch);
        let mut replayed = 0;
        let complete = if !same_epoch || msg.after > room.offset {
            false // offsets restarted since the client's view: nothing to replay safely
        } else if msg.after == room.offset {
            true
        } else {
            let mut sent = msg.after;
            let kept_from = room.kept_from(room.offset);
            let complete = match history.as_ref().filter(|h| h.head.epoch == room.epoch) {
                Some(h) => {
                    for (offset, frame) in &h.entries {
                        if *offset > sent && *offset >= kept_from {
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
                    h.oldest > 0 && h.oldest.max(kept_from) <= msg.after + 1
                }
                None => room
                    .history
                    .front()
                    .is_some_and(|e| e.offset <= msg.after + 1),
            };
            // Messages this node applied after the broker's history was read.
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
    /// or left while this hub was down), history past its limits, and rooms
    /// left with neither.
    fn prune(&mut self, ctx: &mut Context<Self>) {
        let mut gone = Vec::new();
        {
            let mut state = self.state.lock();
            let now = Instant::now();
            for (name, room) in state.rooms.iter_mut() {
                for session in room.retain_connected() {
                    gone.push((name.clone(), session));
                }
                room.prune(now);
            }
            state.rooms.retain(|_, r| !r.is_idle(now));
        }
        for (room, session) in gone {
            self.tell_members(ctx, &room, Membership::Left { session });
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    /// Prunes stale members now and every `PRUNE_INTERVAL`; with a shared
    /// broker, reconciles every `RECONCILE_INTERVAL`. Cannot fail.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
        // The gap reads of an earlier incarnation died with its context: a
        // room still marked as filling would hold its publications for ever.
        for room in self.state.lock().rooms.values_mut() {
            room.sequence.reading_ended();
        }
        self.prune(ctx);
        ctx.run_interval(PRUNE_INTERVAL, |hub, ctx| hub.prune(ctx));
        if self.broker.shared() {
            ctx.run_interval(RECONCILE_INTERVAL, |hub, ctx| hub.reconcile(ctx));
        }
        if let Some(every) = self.broker.presence_refresh() {
            // A new incarnation tells the broker its members at once.
            self.refresh_members(ctx);
            ctx.run_interval(every, |hub, ctx| hub.refresh_members(ctx));
        }
        if let Some(every) = self.config.presence_batch {
            ctx.run_interval(every, |hub, ctx| hub.announce_presence(ctx));
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

impl Handler<Join> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        self.depth.dec();
        let here = {
            let mut state = self.state.lock();
            let r = state.room(&msg.room);
            (!r.sequence.synced).then(|| r.position())
        };
        // A room this node does not follow yet: learn its position first.
        let head = match here {
            Some(here) if self.shared_up() => self.broker.head(&msg.room, &here),
            _ => return self.join_now(ctx, msg),
        };
        match head {
            Reply::Now(head) => {
                if let Ok(head) = head {
                    self.state.lock().room(&msg.room).sync(&msg.room, head);
                }
                self.join_now(ctx, msg);
            }
            Reply::Later(head) => {
                ctx.wait(head.into_actor(self).map(move |head, act, ctx| {
                    if let Ok(head) = head {
                        act.state.lock().room(&msg.room).sync(&msg.room, head);
                    }
                    act.join_now(ctx, msg);
                }));
            }
        }
    }
}

impl Handler<PresenceChanged> for Hub {
    type Result = ();

    /// Another node's members of the room changed: read it at the next batch.
    fn handle(&mut self, msg: PresenceChanged, _ctx: &mut Context<Self>) {
        let mut state = self.state.lock();
        if let Some(t) = state
            .rooms
            .get_mut(&*msg.room)
            .and_then(|r| r.presence.as_mut())
        {
            t.changed();
        }
    }
}

/// Answered once the hub has handled everything sent to it before (see
/// `Rooms::flushed`).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Flush;

impl Handler<Flush> for Hub {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.depth.dec();
        let left = {
            let mut state = self.state.lock();
            let left = state
                .rooms
                .get_mut(&msg.room)
                .is_some_and(|r| r.remove_member(&msg.member));
            if state
                .rooms
                .get(&msg.room)
                .is_some_and(|r| r.is_idle(Instant::now()))
            {
                state.rooms.remove(&msg.room);
            }
            left
        };
        if left {
            let session = msg.member.session.clone();
            self.tell_members(ctx, &msg.room, Membership::Left { session });
        }
        if let Some(LeaveAnswer { id }) = msg.answer {
            msg.member
                .inbox
                .send(RoomEvent::Left { room: msg.room, id });
        }
    }
}

impl Handler<Announce> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Announce, ctx: &mut Context<Self>) {
        let p = msg.publication;
        let followed = self
            .state
            .lock()
            .rooms
            .get(&p.room)
            .is_some_and(|r| !r.members.is_empty());
        if followed {
            self.apply(ctx, p.room, p.position, p.frame, None);
        }
    }
}

impl Handler<Reconcile> for Hub {
    type Result = ();

    fn handle(&mut self, _: Reconcile, ctx: &mut Context<Self>) {
        self.reconcile(ctx);
    }
}

impl Handler<Presence> for Hub {
    type Result = ResponseActFuture<Self, Vec<PresenceEntry>>;

    /// The cluster's presence with a shared broker that answers; this
    /// node's members otherwise (the broker is down: each node answers for
    /// its own).
    fn handle(&mut self, msg: Presence, _ctx: &mut Context<Self>) -> Self::Result {
        self.depth.dec();
        match self.broker.presence(&msg.room) {
            Reply::Now(Ok(Some(list))) => Box::pin(actix::fut::ready(list)),
            Reply::Now(_) => Box::pin(actix::fut::ready(self.local_presence(&msg.room))),
            Reply::Later(fut) => {
                Box::pin(fut.into_actor(self).map(move |list, act, _| match list {
                    Ok(Some(list)) => list,
                    _ => act.local_presence(&msg.room),
                }))
            }
        }
    }
}

impl Hub {
    /// This node's members of `room`.
    fn local_presence(&self, room: &str) -> Vec<PresenceEntry> {
        let state = self.state.lock();
        state
            .rooms
            .get(room)
            .map(Room::presence)
            .unwrap_or_default()
    }
}

impl Handler<ReadHistory> for Hub {
    type Result = ResponseActFuture<Self, HistoryPage>;

    /// From the shared broker's history when it answers, this node's
    /// otherwise.
    fn handle(&mut self, msg: ReadHistory, _ctx: &mut Context<Self>) -> Self::Result {
        self.depth.dec();
        let to = msg.since.saturating_add(msg.limit as u64);
        let read = match self.shared_up() {
            true => self.broker.history(&msg.room, msg.since + 1, to),
            false => Reply::Now(Ok(None)),
        };
        match read {
            Reply::Now(history) => {
                Box::pin(actix::fut::ready(self.page(&msg, history.ok().flatten())))
            }
            Reply::Later(history) => Box::pin(
                history
                    .into_actor(self)
                    .map(move |history, act, _| act.page(&msg, history.ok().flatten())),
            ),
        }
    }
}

impl Hub {
    /// A page of history: the broker's entries (when it has the room),
    /// then what this node applied after them.
    fn page(&mut self, msg: &ReadHistory, broker: Option<History>) -> HistoryPage {
        let mut state = self.state.lock();
        let room = state.room(&msg.room);
        room.prune(Instant::now());
        let broker = broker.filter(|h| !h.head.epoch.is_empty());
        let (epoch, latest, oldest) = match &broker {
            Some(h) => (
                h.head.epoch.clone(),
                h.head.offset.max(room.offset),
                h.oldest,
            ),
            None => (
                room.epoch.clone(),
                room.offset,
                room.history.front().map_or(0, |e| e.offset),
            ),
        };
        // A shared broker trims about to the size: keep exactly it.
        let kept_from = room.kept_from(latest);
        let oldest = match oldest {
            0 => 0,
            oldest => oldest.max(kept_from),
        };
        let mut messages = Vec::new();
        let mut last = msg.since;
        let held = broker
            .iter()
            .flat_map(|h| h.entries.iter().map(|(o, f)| (*o, f)));
        let applied = room
            .history
            .iter()
            .filter(|_| room.epoch == epoch)
            .map(|e| (e.offset, &e.frame));
        for (offset, frame) in held.chain(applied) {
            if messages.len() == msg.limit {
                break;
            }
            if offset > last && offset >= kept_from {
                if let Some(m) = HistoryMessage::from_frame(frame) {
                    messages.push(m);
                }
                last = offset;
            }
        }
        let complete = msg.since >= latest || (oldest > 0 && oldest <= msg.since + 1);
        HistoryPage {
            epoch,
            messages,
            complete,
        }
    }
}

impl Handler<Resume> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) {
        self.depth.dec();
        if !self.shared_up() {
            return self.resume_now(ctx, msg, None);
        }
        match self.broker.history(&msg.room, msg.after + 1, u64::MAX) {
            Reply::Now(history) => self.resume_now(ctx, msg, history.ok().flatten()),
            // Waits, as a join does, so that a `Leave` behind it applies after it.
            Reply::Later(history) => ctx.wait(
                history
                    .into_actor(self)
                    .map(move |history, act, ctx| act.resume_now(ctx, msg, history.ok().flatten())),
            ),
        }
    }
}

impl Handler<Crash> for Hub {
    type Result = ();

    fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("room hub crash requested (chaos)");
    }
}
