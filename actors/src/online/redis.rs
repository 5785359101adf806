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

/// `KEYS[1]` the user's sessions, `KEYS[2]` the users; `ARGV`: session,
/// attached-until, now, user. Answers 0 (no change), 1 (online), or 2
/// (offline, as the sweep had not yet seen, then online).
const ATTACH_LUA: &str = r#"
local live = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], '+inf')
local all = redis.call('ZCARD', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[2], first[2], ARGV[4])
if live > 0 then return 0 end
if all > 0 then return 2 end
return 1
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

/// `KEYS[1]` the users; `ARGV`: attached-until, the users' key prefix,
/// then user and session pairs: renews those sessions still there.
const REFRESH_LUA: &str = r#"
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('ZSCORE', key, ARGV[i + 1]) then
    redis.call('ZADD', key, ARGV[1], ARGV[i + 1])
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    redis.call('ZADD', KEYS[1], first[2], ARGV[i])
  end
end
return 1
"#;

struct Scripts {
    attach: redis::Script,
    detach: redis::Script,
    sweep: redis::Script,
    refresh: redis::Script,
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
                refresh: redis::Script::new(REFRESH_LUA),
            }),
        }
    }

    /// When an attached session stops counting unless renewed.
    fn attached_until(&self) -> i64 {
        now_unix_ms() + (LEASE + self.grace).as_millis() as i64
    }
}

impl Tracker for RedisTracker {
    fn attach(
        &self,
        user: &str,
        session: &str,
    ) -> BoxFuture<'static, Result<Vec<UserChange>, String>> {
        let (redis, scripts) = (self.redis.clone(), self.scripts.clone());
        let keys = [format!("{}{user}", self.user_prefix), self.users.clone()];
        let (user, session): (Arc<str>, String) = (user.into(), session.to_owned());
        let until = self.attached_until();
        Box::pin(async move {
            let mut inv = scripts.attach.prepare_invoke();
            inv.key(&keys[0])
                .key(&keys[1])
                .arg(&session)
                .arg(until)
                .arg(now_unix_ms())
                .arg(&*user);
            let answer: i64 = redis.run(None, inv).await.map_err(|e| e.to_string())?;
            Ok(match answer {
                1 => vec![UserChange::Online(user)],
                2 => vec![UserChange::Offline(user.clone()), UserChange::Online(user)],
                _ => Vec::new(),
            })
        })
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
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        if attached.is_empty() {
            return None;
        }
        let (redis, scripts) = (self.redis.clone(), self.scripts.clone());
        let (users, prefix) = (self.users.clone(), self.user_prefix.clone());
        let until = self.attached_until();
        Some(Box::pin(async move {
            let mut inv = scripts.refresh.prepare_invoke();
            inv.key(&users).arg(until).arg(&prefix);
            for (user, session) in &attached {
                inv.arg(&**user).arg(&**session);
            }
            redis
                .run::<i64>(None, inv)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
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
