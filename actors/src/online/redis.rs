//! [`RedisTracker`]: sessions counted in Redis, shared by every node.
//!
//! Per user, a sorted set of their sessions scored by when each ends (Unix
//! ms): a detached one at the end of its grace, an attached one a lease
//! and a grace ahead, renewed by its node; and one sorted set of users,
//! scored by their first session to end, which the sweeps read. Each step
//! is one script, so a change is made, and announced, by one node only.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Tracker, UserChange};
use crate::clock::now_unix_ms;
use crate::health::Health;
use crate::redis::Redis;

/// How long an attached session counts without its node renewing it (then
/// its grace begins).
const LEASE: Duration = Duration::from_secs(30);
/// Most users one sweep ends.
const SWEEP_BATCH: usize = 500;
/// Most sessions one refresh script renews (a node's sessions go in several
/// scripts, so that none holds Redis for long).
const REFRESH_BATCH: usize = 1000;

/// Attaches sessions: `KEYS[1]` the users; `ARGV`: attached-until, now,
/// the users' key prefix, then user and session pairs. Answers a code per
/// pair: 0 (no change: the user had a live session), 1 (online), or 2
/// (offline, as the sweep had not yet seen, then online). The refresh is
/// the same step over every session attached here: it renews their lease,
/// and puts back (announcing the user online) one whose attach never
/// reached Redis, or that Redis lost.
const ATTACH_LUA: &str = r#"
local out = {}
for i = 4, #ARGV, 2 do
  local key = ARGV[3] .. ARGV[i]
  local live = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf')
  local all = redis.call('ZCARD', key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
  redis.call('ZADD', key, ARGV[1], ARGV[i + 1])
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[1], first[2], ARGV[i])
  if live > 0 then table.insert(out, 0)
  elseif all > 0 then table.insert(out, 2)
  else table.insert(out, 1) end
end
return out
"#;

/// `KEYS` as for attach; `ARGV`: session, ends-at (0: now), user. Answers
/// 1 when the user's last session ended (offline), else 0.
const DETACH_LUA: &str = r#"
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
elseif redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return redis.call('ZREM', KEYS[2], ARGV[3])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], first[2], ARGV[3])
return 0
"#;

/// `KEYS[1]` the users; `ARGV`: now, the users' key prefix, batch. Ends
/// what is due; answers the users whose last session ended.
const SWEEP_LUA: &str = r#"
local out = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  local key = ARGV[2] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], user)
    table.insert(out, user)
  else
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    redis.call('ZADD', KEYS[1], first[2], user)
  end
end
return out
"#;

struct Scripts {
    attach: redis::Script,
    detach: redis::Script,
    sweep: redis::Script,
}

/// See the module docs.
pub(super) struct RedisTracker {
    redis: Redis,
    grace: Duration,
    /// `<prefix>:online:u:`, followed by the user.
    user_prefix: String,
    /// `<prefix>:online:users`.
    users: String,
    scripts: Arc<Scripts>,
}

impl RedisTracker {
    pub(super) fn new(redis: Redis, grace: Duration) -> Self {
        let prefix = redis.prefix().to_owned();
        Self {
            redis,
            grace,
            user_prefix: format!("{prefix}:online:u:"),
            users: format!("{prefix}:online:users"),
            scripts: Arc::new(Scripts {
                attach: redis::Script::new(ATTACH_LUA),
                detach: redis::Script::new(DETACH_LUA),
                sweep: redis::Script::new(SWEEP_LUA),
            }),
        }
    }

    /// When an attached session stops counting unless renewed.
    fn attached_until(&self) -> i64 {
        now_unix_ms() + (LEASE + self.grace).as_millis() as i64
    }
}

impl RedisTracker {
    /// Attaches `sessions` (user, session) in one step; see [`ATTACH_LUA`].
    fn attach_all(
        &self,
        sessions: Vec<(Arc<str>, Arc<str>)>,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (redis, scripts) = (self.redis.clone(), self.scripts.clone());
        let (users, prefix) = (self.users.clone(), self.user_prefix.clone());
        let until = self.attached_until();
        Box::pin(async move {
            let mut inv = scripts.attach.prepare_invoke();
            inv.key(&users).arg(until).arg(now_unix_ms()).arg(&prefix);
            for (user, session) in &sessions {
                inv.arg(&**user).arg(&**session);
            }
            let codes: Vec<i64> = redis.run(None, inv).await.map_err(|e| e.to_string())?;
            let mut changes = Vec::new();
            for ((user, _), code) in sessions.into_iter().zip(codes) {
                match code {
                    1 => changes.push(UserChange::Online(user)),
                    2 => changes
                        .extend([UserChange::Offline(user.clone()), UserChange::Online(user)]),
                    _ => {}
                }
            }
            Ok(changes)
        })
    }
}

impl Tracker for RedisTracker {
    fn attach(
        &self,
        user: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        self.attach_all(vec![(user.into(), session.into())])
    }

    fn detach(
        &self,
        user: &str,
        session: &str,
        grace: Duration,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (redis, scripts) = (self.redis.clone(), self.scripts.clone());
        let keys = [format!("{}{user}", self.user_prefix), self.users.clone()];
        let (user, session): (Arc<str>, String) = (user.into(), session.to_owned());
        let ends = match grace.is_zero() {
            true => 0,
            false => now_unix_ms() + grace.as_millis() as i64,
        };
        Box::pin(async move {
            let mut inv = scripts.detach.prepare_invoke();
            inv.key(&keys[0])
                .key(&keys[1])
                .arg(&session)
                .arg(ends)
                .arg(&*user);
            let ended: i64 = redis.run(None, inv).await.map_err(|e| e.to_string())?;
            Ok(match ended {
                1 => vec![UserChange::Offline(user)],
                _ => Vec::new(),
            })
        })
    }

    fn sweep(&self) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (redis, scripts) = (self.redis.clone(), self.scripts.clone());
        let (users, prefix) = (self.users.clone(), self.user_prefix.clone());
        Box::pin(async move {
            let mut inv = scripts.sweep.prepare_invoke();
            inv.key(&users)
                .arg(now_unix_ms())
                .arg(&prefix)
                .arg(SWEEP_BATCH);
            let ended: Vec<String> = redis.run(None, inv).await.map_err(|e| e.to_string())?;
            Ok(ended
                .into_iter()
                .map(|user| UserChange::Offline(user.into()))
                .collect())
        })
    }

    fn refresh(
        &self,
        attached: Vec<(Arc<str>, Arc<str>)>,
    ) -> Option<BoxFuture<'static, Result<Vec<UserChange>, String>>> {
        if attached.is_empty() {
            return None;
        }
        let steps: Vec<_> = attached
            .chunks(REFRESH_BATCH)
            .map(|batch| self.attach_all(batch.to_vec()))
            .collect();
        Some(Box::pin(async move {
            let mut changes = Vec::new();
            for step in steps {
                changes.extend(step.await?);
            }
            Ok(changes)
        }))
    }

    fn refresh_every(&self) -> Option<Duration> {
        Some(LEASE / 3)
    }

    fn describe(&self) -> Health {
        let h = match self.redis.is_up() {
            true => Health::healthy(),
            false => Health::degraded("redis is down: user online/offline changes wait for it"),
        };
        h.with("tracker", "redis")
    }
}
