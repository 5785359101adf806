//! [`Cache`]: the sessions [`PersistentSessions`](super::PersistentSessions)
//! holds in memory, with an index of the detached ones by expiry.
//!
//! The index makes the sweep cheap (it pops what expired, oldest first,
//! rather than scanning every session) and bounds what a flood of
//! connections can make the server hold: past `max_detached` detached
//! sessions, the one that would expire first is forgotten at once (it can
//! no longer be resumed; its client starts a new session), whatever the
//! TTL. Attached sessions are never forgotten.

use std::collections::{BTreeSet, HashMap};

use super::persistent::Cached;

/// See the module docs.
pub(super) struct Cache {
    sessions: HashMap<String, Cached>,
    /// `(expires_at, id)` of every detached session.
    detached: BTreeSet<(i64, String)>,
    max_detached: usize,
}

impl Cache {
    pub(super) fn new(max_detached: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            detached: BTreeSet::new(),
            max_detached: max_detached.max(1),
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&Cached> {
        self.sessions.get(id)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    pub(super) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Detached sessions held.
    pub(super) fn detached(&self) -> usize {
        self.detached.len()
    }

    /// Detached sessions that can still be held before one is forgotten.
    pub(super) fn room(&self) -> usize {
        self.max_detached.saturating_sub(self.detached.len())
    }

    /// Puts `cached` in (replacing a session of the same id); answers the
    /// ids forgotten to stay within `max_detached`.
    pub(super) fn insert(&mut self, cached: Cached) -> Vec<String> {
        let id = cached.record.id.clone();
        self.unindex(&id);
        if let Some(at) = cached.expires_at {
            self.detached.insert((at, id.clone()));
        }
        self.sessions.insert(id, cached);
        self.over_bound()
    }

    /// Changes the session `id` in place (its expiry re-indexed); answers
    /// what [`insert`](Self::insert) does, and `None` if it is not held.
    pub(super) fn update<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Cached) -> R,
    ) -> Option<(R, Vec<String>)> {
        self.unindex(id);
        let cached = self.sessions.get_mut(id)?;
        let answer = change(cached);
        if let Some(at) = cached.expires_at {
            self.detached.insert((at, id.to_owned()));
        }
        Some((answer, self.over_bound()))
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Cached> {
        self.unindex(id);
        self.sessions.remove(id)
    }

    /// Forgets the sessions expired by `now`; answers how many.
    pub(super) fn purge(&mut self, now: i64) -> usize {
        let mut purged = 0;
        while let Some((at, _)) = self.detached.first() {
            if *at > now {
                break;
            }
            let (_, id) = self.detached.pop_first().expect("checked above");
            self.sessions.remove(&id);
            purged += 1;
        }
        purged
    }

    fn unindex(&mut self, id: &str) {
        if let Some(at) = self.sessions.get(id).and_then(|c| c.expires_at) {
            self.detached.remove(&(at, id.to_owned()));
        }
    }

    /// Forgets the detached sessions that expire first while more than
    /// `max_detached` are held; answers their ids.
    fn over_bound(&mut self) -> Vec<String> {
        let mut forgotten = Vec::new();
        while self.detached.len() > self.max_detached {
            let (_, id) = self.detached.pop_first().expect("longer than the bound");
            self.sessions.remove(&id);
            forgotten.push(id);
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;
    use crate::sessions::SessionRecord;

    fn session(id: &str, expires_at: Option<i64>) -> Cached {
        Cached {
            record: SessionRecord {
                id: id.to_owned(),
                user: "u".to_owned(),
                rooms: BTreeMap::new(),
                created: SystemTime::UNIX_EPOCH,
                last_seen: SystemTime::UNIX_EPOCH,
            },
            expires_at,
        }
    }

    #[test]
    fn past_the_bound_the_session_expiring_first_goes_and_attached_ones_stay() {
        let mut cache = Cache::new(2);
        assert!(cache.insert(session("attached", None)).is_empty());
        assert!(cache.insert(session("b", Some(20))).is_empty());
        assert!(cache.insert(session("a", Some(10))).is_empty());
        assert_eq!(cache.insert(session("c", Some(30))), ["a"]);
        // Re-detached later: "b" now expires last, so "c" goes first.
        let (_, gone) = cache.update("b", |c| c.expires_at = Some(40)).unwrap();
        assert!(gone.is_empty());
        assert_eq!(cache.insert(session("d", Some(35))), ["c"]);
        assert_eq!((cache.len(), cache.detached()), (3, 2));
        // Attached again: out of the index, never forgotten.
        cache.update("d", |c| c.expires_at = None).unwrap();
        assert_eq!(cache.detached(), 1);
        assert_eq!(cache.purge(100), 1, "b expired");
        assert!(cache.contains("attached") && cache.contains("d"));
        assert!(cache.remove("d").is_some() && !cache.contains("d"));
    }
}
