//! Presence events (PROTOCOL.md, "Presence events"): in the rooms whose
//! namespace asks for them, members receive `presence_diff` after a user's
//! first session joins or last session leaves, batched.
//!
//! A room tracks what its members on this node were last told
//! ([`PresenceTrack`]). A change of its members here, or a word from
//! another node that its members there changed, marks it dirty; every batch
//! interval the hub reads the room's presence (the cluster's, with a shared
//! broker; this node's members otherwise) for each dirty room and tells
//! its members the users that appeared and disappeared since. So a user
//! with a session on another node is no join, a join and leave inside one
//! batch is nothing, and every node's members see the same diff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytestring::ByteString;
use serde::Serialize;

use super::PresenceEntry;

/// What one room's members on this node were told of its presence.
#[derive(Default)]
pub(super) struct PresenceTrack {
    /// The users present as last told; `None` before the first batch.
    announced: Option<HashSet<String>>,
    /// Users whose sessions joined here since the last batch (the first
    /// batch announces those of them with no session elsewhere).
    fresh: HashSet<Arc<str>>,
    /// Presence changed since the last batch.
    pub(super) dirty: bool,
}

/// One line of a diff.
#[derive(Serialize)]
struct Line<'a> {
    user: &'a str,
    sessions: usize,
}

#[derive(Serialize)]
struct Diff<'a> {
    r#type: &'static str,
    room: &'a str,
    joins: Vec<Line<'a>>,
    leaves: Vec<Line<'a>>,
}

impl PresenceTrack {
    /// A session of `user` joined here.
    pub(super) fn joined(&mut self, user: &Arc<str>) {
        self.fresh.insert(user.clone());
        self.dirty = true;
    }

    /// Presence changed here or elsewhere.
    pub(super) fn changed(&mut self) {
        self.dirty = true;
    }

    /// Compares `now` (the room's presence; `here` counts this node's
    /// sessions per user) with what was told; answers the `presence_diff`
    /// frame, if anyone appeared or disappeared.
    pub(super) fn diff(
        &mut self,
        room: &str,
        now: &[PresenceEntry],
        here: &HashMap<&str, usize>,
    ) -> Option<ByteString> {
        self.dirty = false;
        let fresh = std::mem::take(&mut self.fresh);
        let present: HashSet<String> = now.iter().map(|e| e.user.clone()).collect();
        let before = self.announced.take();
        let joins: Vec<Line<'_>> = now
            .iter()
            .filter(|e| match &before {
                Some(before) => !before.contains(&e.user),
                // The first batch: only users who came with this node's
                // joins and have no session elsewhere are news.
                None => {
                    fresh.contains(e.user.as_str())
                        && here.get(e.user.as_str()) == Some(&e.sessions)
                }
            })
            .map(|e| Line {
                user: &e.user,
                sessions: e.sessions,
            })
            .collect();
        let mut gone: Vec<String> = before
            .iter()
            .flatten()
            .filter(|user| !present.contains(*user))
            .cloned()
            .collect();
        gone.sort_unstable();
        self.announced = Some(present);
        frame(room, joins, &gone)
    }
}

/// The frame, unless nothing changed.
fn frame(room: &str, joins: Vec<Line<'_>>, gone: &[String]) -> Option<ByteString> {
    if joins.is_empty() && gone.is_empty() {
        return None;
    }
    let diff = Diff {
        r#type: "presence_diff",
        room,
        joins,
        leaves: gone.iter().map(|user| Line { user, sessions: 0 }).collect(),
    };
    serde_json::to_string(&diff).ok().map(ByteString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, sessions: usize) -> PresenceEntry {
        PresenceEntry {
            user: user.into(),
            sessions,
        }
    }

    fn parse(frame: Option<ByteString>) -> serde_json::Value {
        frame.map_or(serde_json::Value::Null, |f| {
            serde_json::from_str(&f).unwrap()
        })
    }

    #[test]
    fn first_joins_and_last_leaves_only() {
        let mut t = PresenceTrack::default();
        let a: Arc<str> = "a".into();
        t.joined(&a);
        let here = HashMap::from([("a", 1)]);
        let d = parse(t.diff("r", &[entry("a", 1)], &here));
        assert_eq!(
            d["joins"],
            serde_json::json!([{"user": "a", "sessions": 1}])
        );
        assert_eq!(d["leaves"], serde_json::json!([]));
        // A second session of a: nothing.
        t.joined(&a);
        assert!(t
            .diff("r", &[entry("a", 2)], &HashMap::from([("a", 2)]))
            .is_none());
        // b joins elsewhere, a's last session leaves.
        let d = parse(t.diff("r", &[entry("b", 1)], &HashMap::new()));
        assert_eq!(
            d["joins"],
            serde_json::json!([{"user": "b", "sessions": 1}])
        );
        assert_eq!(
            d["leaves"],
            serde_json::json!([{"user": "a", "sessions": 0}])
        );
    }

    #[test]
    fn the_first_batch_announces_no_one_who_was_there_before() {
        let mut t = PresenceTrack::default();
        let a: Arc<str> = "a".into();
        t.joined(&a);
        // a already had a session on another node; old was there before.
        let now = [entry("a", 2), entry("old", 1)];
        assert!(t.diff("r", &now, &HashMap::from([("a", 1)])).is_none());
    }
}
