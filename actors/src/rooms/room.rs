//! The room model: one room's members, offset, epoch and history ring, and
//! the fan-out of one message to every member.
//!
//! A room is changed only by the hub of its shard (see `hub`); everything
//! here runs on that hub's thread, under its shard's lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::broker::{new_epoch, Position, Sequence};
use super::outlet::{Inbox, Member, Outlet, RoomEvent};
use super::presence::PresenceTrack;
use super::PresenceEntry;

/// How much history one room keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept (0: none).
    pub size: usize,
    /// Oldest message kept.
    pub max_age: Duration,
}

/// What the hubs apply to each room, by its name: a server's namespaces.
pub trait RoomOptions: Send + Sync + 'static {
    /// The history `room` keeps.
    fn history(&self, room: &str) -> HistoryLimits;
    /// Whether `room`'s members receive `presence_diff`.
    fn presence_events(&self, room: &str) -> bool {
        let _ = room;
        false
    }
}

/// Every room alike, without presence events.
impl RoomOptions for HistoryLimits {
    fn history(&self, _room: &str) -> HistoryLimits {
        *self
    }
}

/// The rooms' options.
#[derive(Clone)]
pub struct RoomConfig {
    /// Each room's history and presence events.
    pub options: Arc<dyn RoomOptions>,
    /// How often members are told `presence_diff` (at most once per room
    /// per interval); `None` when no room has presence events.
    pub presence_batch: Option<Duration>,
}

impl RoomConfig {
    /// `limits` for every room, no presence events.
    pub fn uniform(limits: HistoryLimits) -> Self {
        Self {
            options: Arc::new(limits),
            presence_batch: None,
        }
    }
}

/// One message of history.
pub(super) struct Entry {
    pub(super) offset: u64,
    pub(super) frame: ByteString,
    at: Instant,
}

/// One room.
pub(super) struct Room {
    /// Members by session id.
    pub(super) members: HashMap<Arc<str>, Member>,
    /// The outlets serving members, with how many each serves.
    outlets: Vec<(Arc<dyn Outlet>, usize)>,
    /// Members reached through an actor's mailbox.
    actors: usize,
    /// The latest offset assigned; the next message gets `offset + 1`.
    pub(super) offset: u64,
    /// Changes whenever offsets restart (a new room, history lost).
    pub(super) epoch: Arc<str>,
    /// Recent messages, oldest first, bounded by size and age.
    pub(super) history: VecDeque<Entry>,
    /// With a broker shared by several nodes: where the room stands in the
    /// broker's sequence (held messages, a gap being filled).
    pub(super) sequence: Sequence,
    /// In a room with presence events: what its members were told.
    pub(super) presence: Option<PresenceTrack>,
    /// The history it keeps.
    pub(super) limits: HistoryLimits,
    /// Where the room stood in the shared broker's sequence when it left it
    /// for a node-local epoch (the broker down): if the broker still has
    /// that epoch when it is back, members continue from there.
    previous: Option<Position>,
    /// Restored from a checkpoint: kept, idle or not, until then, so that
    /// the sessions that may still resume into it find its epoch.
    pub(super) kept_until: Option<Instant>,
}

impl Room {
    /// A new room named `name`, with its options from `config`.
    pub(super) fn new(name: &str, config: &RoomConfig) -> Self {
        Self {
            members: HashMap::new(),
            outlets: Vec::new(),
            actors: 0,
            offset: 0,
            epoch: new_epoch().into(),
            history: VecDeque::new(),
            sequence: Sequence::default(),
            presence: (config.presence_batch.is_some() && config.options.presence_events(name))
                .then(PresenceTrack::default),
            limits: config.options.history(name),
            previous: None,
            kept_until: None,
        }
    }

    /// The room's epoch and latest offset.
    pub(super) fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// Whether the room has neither members nor history, and is not kept
    /// for resumes after a restart (see `kept_until`): it can go.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.members.is_empty()
            && self.history.is_empty()
            && self.kept_until.is_none_or(|until| now >= until)
    }

    /// Adds (or replaces) a member.
    pub(super) fn add(&mut self, member: Member) {
        self.count(&member.inbox, true);
        if let Some(track) = &mut self.presence {
            track.joined(&member.user);
        }
        if let Some(old) = self.members.insert(member.session.clone(), member) {
            self.count(&old.inbox, false);
        }
    }

    /// Removes `member`, unless its session is in the room through another
    /// connection now (it was resumed elsewhere); answers whether it did.
    pub(super) fn remove_member(&mut self, member: &Member) -> bool {
        let same = self
            .members
            .get(&member.session)
            .is_some_and(|m| m.inbox.same(&member.inbox));
        if same {
            self.remove(&member.session);
        }
        same
    }

    /// Removes a member.
    fn remove(&mut self, session: &str) {
        if let Some(old) = self.members.remove(session) {
            self.count(&old.inbox, false);
            if let Some(track) = &mut self.presence {
                track.changed();
            }
        }
    }

    /// Drops members whose connection is gone; answers their sessions.
    pub(super) fn retain_connected(&mut self) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| !m.inbox.connected())
            .map(|(session, _)| session.clone())
            .collect();
        for session in &gone {
            self.remove(session);
        }
        gone
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

    /// This node's sessions in the room, per user.
    pub(super) fn sessions_by_user(&self) -> HashMap<&str, usize> {
        let mut by_user: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            *by_user.entry(&m.user).or_default() += 1;
        }
        by_user
    }

    /// `elsewhere` (other nodes' members) with this node's, one line per
    /// user, sorted by user.
    pub(super) fn presence_with(&self, elsewhere: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
        let mut by_user: std::collections::BTreeMap<String, usize> = elsewhere
            .into_iter()
            .map(|e| (e.user, e.sessions))
            .collect();
        for (user, sessions) in self.sessions_by_user() {
            *by_user.entry(user.to_owned()).or_default() += sessions;
        }
        by_user
            .into_iter()
            .map(|(user, sessions)| PresenceEntry { user, sessions })
            .collect()
    }

    /// Who is in the room, one line per user, sorted by user.
    pub(super) fn presence(&self) -> Vec<PresenceEntry> {
        let mut list: Vec<PresenceEntry> = self
            .sessions_by_user()
            .into_iter()
            .map(|(user, sessions)| PresenceEntry {
                user: user.to_owned(),
                sessions,
            })
            .collect();
        list.sort_by(|a, b| a.user.cmp(&b.user));
        list
    }

    /// Adopts a shared broker's position; history of another epoch is
    /// dropped. When the epoch changes under members (the broker lost the
    /// room's history, or this node comes back from a node-local epoch),
    /// they are told first ([`RoomEvent::Epoch`]) and the room continues
    /// after the offset they have of the new epoch (0 for an epoch they never
    /// saw), so that the caller fills the rest from the broker: no message
    /// acknowledged in the new epoch is skipped.
    pub(super) fn sync(&mut self, room: &Arc<str>, head: Position) {
        if !self.sequence.synced || self.epoch != head.epoch {
            let changed = self.epoch != head.epoch;
            if changed {
                self.release_held(room);
            }
            let seen = self
                .previous
                .take()
                .filter(|p| p.epoch == head.epoch)
                .map(|p| p.offset);
            self.offset = match (changed && !self.members.is_empty(), seen) {
                (false, _) => head.offset,
                (true, Some(seen)) => seen.min(head.offset),
                (true, None) => 0,
            };
            self.epoch = head.epoch;
            self.history.clear();
            self.sequence = Sequence::synced();
            if changed {
                self.tell_epoch(room);
            }
        } else if head.offset > self.offset && self.sequence.is_empty() && self.history.is_empty() {
            self.offset = head.offset;
        }
    }

    /// Leaves the shared broker's sequence: offsets continue on a new,
    /// node-local epoch (the broker is down); members are told.
    pub(super) fn unsync(&mut self, room: &Arc<str>) {
        self.release_held(room);
        if self.sequence.synced {
            self.previous = Some(self.position());
        }
        self.sequence = Sequence::default();
        self.epoch = new_epoch().into();
        self.history.clear();
        self.tell_epoch(room);
    }

    /// Delivers what the sequence held behind a gap that can no longer be
    /// filled (the epoch is being left): the offsets before them are gone,
    /// but these were acknowledged to their publishers, so they are not
    /// dropped; members see the gap, then the epoch frame.
    fn release_held(&mut self, room: &Arc<str>) {
        for (offset, frame, at) in self.sequence.take_held() {
            self.deliver(room, offset, frame, at);
        }
    }

    /// Tells every member the room's epoch changed, and the offset the next
    /// message follows.
    fn tell_epoch(&self, room: &Arc<str>) {
        for member in self.members.values() {
            member.inbox.send(RoomEvent::Epoch {
                room: room.clone(),
                epoch: self.epoch.clone(),
                offset: self.offset,
            });
        }
    }

    /// Appends a message and sends it to every member.
    pub(super) fn deliver(
        &mut self,
        room: &Arc<str>,
        offset: u64,
        frame: ByteString,
        at: Option<Instant>,
    ) {
        let now = Instant::now();
        self.history.push_back(Entry {
            offset,
            frame: frame.clone(),
            at: now,
        });
        self.offset = offset;
        self.prune(now);
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

    /// Tells every member `presence_diff` if `now` (the room's presence)
    /// differs from what they were told.
    pub(super) fn announce_presence(&mut self, room: &Arc<str>, now: &[PresenceEntry]) {
        let Some(mut track) = self.presence.take() else {
            return;
        };
        if let Some(frame) = track.diff(room, now, &self.sessions_by_user()) {
            for member in self.members.values() {
                member.inbox.send(RoomEvent::Presence {
                    room: room.clone(),
                    frame: frame.clone(),
                });
            }
        }
        self.presence = Some(track);
    }

    /// The oldest offset the room's history may hold when its latest is
    /// `latest` (a shared broker trims only about to the size).
    pub(super) fn kept_from(&self, latest: u64) -> u64 {
        latest.saturating_sub(self.limits.size as u64) + 1
    }

    /// Drops history past its size or age.
    pub(super) fn prune(&mut self, now: Instant) {
        while self.history.len() > self.limits.size
            || self
                .history
                .front()
                .is_some_and(|e| now.duration_since(e.at) > self.limits.max_age)
        {
            self.history.pop_front();
        }
    }
}
