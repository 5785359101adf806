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
//! `max_pending` upserts and as many deletes; past that the oldest of the
//! kind are dropped and counted) and flushed when it returns. A `resume` of a session the cache does not hold reads
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

mod actor;
mod cache;
mod checkpoint;
mod pending;
mod persistent;
mod upsert;

pub use actor::SessionsActor;
pub use checkpoint::{load_room_checkpoint, save_room_checkpoint, RoomRow};
pub use persistent::PersistentSessions;

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
    /// Marks the session attached to a live socket (it does not expire while
    /// attached) and answers it; `None` when it is no longer held (forgotten
    /// or expired since it was looked up), and then nothing changes.
    fn attach(&self, id: &str) -> Option<SessionRecord>;
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

    fn attach(&self, id: &str) -> Option<SessionRecord> {
        let now = Instant::now();
        let mut held = self.held.lock();
        let h = held.get_mut(id)?;
        if self.expired(h, now) {
            return None;
        }
        h.detached = None;
        h.record.last_seen = SystemTime::now();
        Some(h.record.clone())
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
