//! [`LocalTracker`]: sessions counted in this node's memory (one node, no
//! Redis).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::{Tracker, UserChange};
use crate::health::Health;

/// One user's sessions: attached (`None`), or ending at an instant.
type Sessions = HashMap<Arc<str>, Option<Instant>>;

/// Users with their sessions.
type Users = HashMap<Arc<str>, Sessions>;

/// See the module docs.
#[derive(Default)]
pub(super) struct LocalTracker {
    users: Mutex<Users>,
}

impl LocalTracker {
    fn step(
        &self,
        f: impl FnOnce(&mut Users, Instant) -> Vec<UserChange>,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let changes = f(&mut self.users.lock(), Instant::now());
        Box::pin(std::future::ready(Ok(changes)))
    }
}

/// Whether a session ending at `end` has ended at `now`.
fn ended(end: &Option<Instant>, now: Instant) -> bool {
    end.is_some_and(|end| end <= now)
}

impl Tracker for LocalTracker {
    fn attach(
        &self,
        user: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (user, session): (Arc<str>, Arc<str>) = (user.into(), session.into());
        self.step(move |users, now| {
            let sessions = users.entry(user.clone()).or_default();
            let mut changes = Vec::new();
            if !sessions.values().any(|end| !ended(end, now)) {
                // Their last session's grace ran out before the sweep saw it.
                if !sessions.is_empty() {
                    changes.push(UserChange::Offline(user.clone()));
                }
                changes.push(UserChange::Online(user));
            }
            sessions.retain(|_, end| !ended(end, now));
            sessions.insert(session, None);
            changes
        })
    }

    fn detach(
        &self,
        user: &str,
        session: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (user, session): (Arc<str>, Arc<str>) = (user.into(), session.into());
        self.step(move |users, now| {
            let Some(sessions) = users.get_mut(&user) else {
                return Vec::new();
            };
            if grace.is_zero() {
                sessions.remove(&session);
            } else if let Some(end) = sessions.get_mut(&session) {
                *end = Some(now + grace);
            }
            if sessions.is_empty() {
                users.remove(&user);
                return vec![UserChange::Offline(user)];
            }
            Vec::new()
        })
    }

    fn sweep(&self) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        self.step(|users, now| {
            let mut changes = Vec::new();
            users.retain(|user, sessions| {
                sessions.retain(|_, end| !ended(end, now));
                if sessions.is_empty() {
                    changes.push(UserChange::Offline(user.clone()));
                }
                !sessions.is_empty()
            });
            changes
        })
    }

    fn refresh(
        &self,
        _attached: Vec<(Arc<str>, Arc<str>)>,
    ) -> Option<BoxFuture<'static, Result<Vec<UserChange>, String>>> {
        None
    }

    fn refresh_every(&self) -> Option<Duration> {
        None
    }

    fn describe(&self) -> Health {
        Health::healthy()
            .with("tracker", "local")
            .with("users", self.users.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now<T>(f: BoxFuture<'static, T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn online_once_offline_after_the_grace_and_a_resume_is_no_change() {
        let t = LocalTracker::default();
        let ann: Arc<str> = "ann".into();
        assert_eq!(
            now(t.attach("ann", "s1")).unwrap(),
            [UserChange::Online(ann.clone())]
        );
        assert!(now(t.attach("ann", "s2")).unwrap().is_empty());
        let grace = Duration::from_millis(20);
        assert!(now(t.detach("ann", "s1", grace)).unwrap().is_empty());
        assert!(now(t.detach("ann", "s2", grace)).unwrap().is_empty());
        // Resumed inside the grace: nothing; then gone for good.
        assert!(now(t.attach("ann", "s2")).unwrap().is_empty());
        assert!(now(t.detach("ann", "s2", grace)).unwrap().is_empty());
        assert!(now(t.sweep()).unwrap().is_empty());
        std::thread::sleep(grace * 2);
        assert_eq!(now(t.sweep()).unwrap(), [UserChange::Offline(ann.clone())]);
        assert!(now(t.sweep()).unwrap().is_empty());
        // Ended at once: offline at once.
        assert_eq!(
            now(t.attach("ann", "s3")).unwrap(),
            [UserChange::Online(ann.clone())]
        );
        assert_eq!(
            now(t.detach("ann", "s3", Duration::ZERO)).unwrap(),
            [UserChange::Offline(ann)]
        );
    }
}
